import time, json, glob, random, sys, resource, numpy as np, torch
from transformers import BertConfig, BertForSequenceClassification
from tokenizers import Tokenizer
torch.set_num_threads(2); torch.manual_seed(0); random.seed(0)
D = '/tmp/r11/work'
tok = Tokenizer.from_file(f'{D}/me5s/tokenizer.json'); tok.enable_truncation(128); tok.enable_padding(pad_id=1, pad_token='<pad>')
texts = []
for f in glob.glob('/work/shared/datasets/prompts/more/*.jsonl') + glob.glob('/work/shared/datasets/prompts/*.jsonl'):
    texts += [__import__('json').loads(l)['text'] for l in open(f)]
random.shuffle(texts)
nl = int(sys.argv[1]); freeze = sys.argv[2] == 'freeze'; maxchars = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
texts = [t for t in texts if len(t) <= maxchars]
cfg = BertConfig.from_pretrained(f'{D}/me5s'); cfg.num_hidden_layers = nl; cfg.num_labels = 2
m = BertForSequenceClassification.from_pretrained(f'{D}/me5s', config=cfg)
if freeze: m.bert.embeddings.word_embeddings.weight.requires_grad_(False)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-5)
m.train(); B = 32; times = []; ntok = []
for step in range(7):
    batch = texts[step * B:(step + 1) * B]
    enc = tok.encode_batch(batch)
    ids = torch.tensor([e.ids for e in enc]); am = torch.tensor([e.attention_mask for e in enc])
    y = torch.randint(0, 2, (B,))
    t = time.perf_counter()
    out = m(input_ids=ids, attention_mask=am, labels=y); out.loss.backward(); opt.step(); opt.zero_grad()
    if step: times.append(time.perf_counter() - t); ntok.append(ids.shape[1])
st = float(np.median(times))
r = dict(layers=nl, freeze_word_emb=freeze, batch=B, padded_len_median=int(np.median(ntok)), step_s=round(st, 2), ex_per_s=round(B / st, 1),
         hours_per_10k_epoch=round(10000 / (B / st) / 3600, 2), maxrss_GB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
         mean_chars=int(np.mean([len(t) for t in texts[:7 * B]])))
print(json.dumps(r)); open(f'{D}/train.jsonl', 'a').write(json.dumps(r) + '\n')
