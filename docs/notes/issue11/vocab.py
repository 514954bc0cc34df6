import json, glob, collections, numpy as np
from tokenizers import Tokenizer
tok = Tokenizer.from_file('/tmp/r11/work/me5s/tokenizer.json')
rows = []
for f in glob.glob('/work/shared/datasets/prompts/*.jsonl') + glob.glob('/work/shared/datasets/prompts/more/*.jsonl') + glob.glob('/work/shared/datasets/prompts/everyday/*.jsonl*'):
    if f.endswith('.gz'):
        import gzip; fh = gzip.open(f, 'rt')
    else: fh = open(f)
    for l in fh:
        try: d = json.loads(l)
        except Exception: continue
        rows.append((d.get('meta', {}).get('lang', 'en'), d.get('text', '')))
print('rows', len(rows))
used = set(); lens = collections.defaultdict(list); chars = collections.defaultdict(list)
for i, (lang, t) in enumerate(rows):
    e = tok.encode(t); used.update(e.ids); lens[lang].append(len(e.ids)); chars[lang].append(len(t))
print('distinct token ids used by all vendored prompts:', len(used))
for lang in sorted(lens, key=lambda k: -len(lens[k]))[:14]:
    a = np.array(lens[lang]); c = np.array(chars[lang])
    print(lang, len(a), 'median tokens', int(np.median(a)), 'p90', int(np.percentile(a, 90)), 'median chars', int(np.median(c)), 'chars/token', round(c.sum() / a.sum(), 2))
