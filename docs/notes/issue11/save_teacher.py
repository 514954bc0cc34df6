"""Save a teacher's first-window logits on the encoder's training rows (research helper, not packaged).

    python docs/notes/issue11/save_teacher.py TEACHER_DIR OUT.json.gz

A later `stormwatch train --model encoder --teacher OUT.json.gz` distils from them without the
teacher's folder (which /tmp does not keep between sessions) or its ~10 min of inference.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stormwatch.detect.cli import _second_tier_paths
from stormwatch.detect.data import read_rows
from stormwatch.detect.encoder_distill import save_teacher_logits, teacher_logits
from stormwatch.detect.encoder_train import TrainConfig, training_rows

teacher, out = Path(sys.argv[1]), Path(sys.argv[2])
fit, _calib = training_rows(read_rows(_second_tier_paths((), ())), TrainConfig())
texts = list(dict.fromkeys(r.text for r in fit))
logits, version = teacher_logits(teacher, texts, threads=2)
save_teacher_logits(out, texts, logits, version)
print(f"{len(texts)} texts, teacher {version} -> {out}")
