import time, json, os, sys, numpy as np, torch, onnxruntime as ort
from transformers import BertModel, BertConfig
from onnxruntime.quantization import quantize_dynamic, QuantType
torch.set_num_threads(1)
D = '/tmp/r11/work'
full = BertModel.from_pretrained(f'{D}/me5s', add_pooling_layer=False).eval()
res = {}
def variant(nl):
    if nl == 12: return full
    cfg = BertConfig.from_pretrained(f'{D}/me5s'); cfg.num_hidden_layers = nl
    m = BertModel(cfg, add_pooling_layer=False).eval()
    sd = {k: v for k, v in full.state_dict().items() if not k.startswith('encoder.layer.') or int(k.split('.')[2]) < nl}
    m.load_state_dict(sd); return m
def tt(f, n):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))
for nl in (12, 6, 4):
    m = variant(nl)
    for L in (128, 90, 32):
        ids = torch.randint(5, 250000, (1, L)); am = torch.ones_like(ids)
        with torch.no_grad():
            res[f'torch_fp32_L{nl}_seq{L}_ms'] = round(1000 * tt(lambda: m(input_ids=ids, attention_mask=am), 10), 1)
    p = f'{D}/me5s_L{nl}.onnx'
    if not os.path.exists(p):
        ids = torch.randint(5, 1000, (1, 16)); am = torch.ones_like(ids)
        class W(torch.nn.Module):
            def __init__(s, m): super().__init__(); s.m = m
            def forward(s, input_ids, attention_mask): return s.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        torch.onnx.export(W(m), (ids, am), p, input_names=['input_ids', 'attention_mask'], output_names=['h'],
                          dynamic_axes={'input_ids': {0: 'b', 1: 's'}, 'attention_mask': {0: 'b', 1: 's'}, 'h': {0: 'b', 1: 's'}},
                          opset_version=17, dynamo=False)
        quantize_dynamic(p, p.replace('.onnx', '.int8pc.onnx'), weight_type=QuantType.QInt8, per_channel=True)
    res[f'size_L{nl}_fp32_MB'] = round(os.path.getsize(p) / 1e6, 1); res[f'size_L{nl}_int8_MB'] = round(os.path.getsize(p.replace('.onnx', '.int8pc.onnx')) / 1e6, 1)
    for kind in ('', '.int8pc'):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
        s = ort.InferenceSession(p.replace('.onnx', kind + '.onnx'), so, providers=['CPUExecutionProvider'])
        for L in (128, 90, 32):
            ids = np.random.randint(5, 250000, (1, L)).astype(np.int64); am = np.ones_like(ids)
            res[f'ort{kind or "_fp32"}_L{nl}_seq{L}_ms'] = round(1000 * tt(lambda: s.run(None, {'input_ids': ids, 'attention_mask': am}), 20), 2)
    print(json.dumps(res), flush=True)
json.dump(res, open(f'{D}/bench.json', 'w'), indent=1)
