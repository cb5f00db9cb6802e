#!/usr/bin/env python3
"""Data-token accuracy of a shoal checkpoint of a sequence model on held-out
selective-copying data, through the PyTorch reference (shared/reference/models.py).
usage: evaluate.py KIND CHECKPOINT TEST_PARQUET [REFERENCE_DIR]"""
import sys, json
sys.path.insert(0, sys.argv[4] if len(sys.argv) > 4 else "../shared/reference")
import torch, pyarrow.parquet as pq
from safetensors.torch import load_file
from models import SequenceModel
kind, ckpt, test = sys.argv[1], sys.argv[2], sys.argv[3]
t = pq.read_table(test)
tokens = torch.tensor(t.column("tokens").to_pylist())
targets = torch.tensor(t.column("targets").to_pylist())
m = SequenceModel(kind, vocab=16, d_model=64, n_layers=2, d_state=8)
w = {k: v for k, v in load_file(ckpt).items() if not k.startswith("optimizer/")}
m.load_state_dict(w)
m.eval()
with torch.no_grad():
    pred = m.head(m.hidden(tokens)).argmax(-1)
mask = targets != -100
acc = (pred[mask] == targets[mask]).float().mean().item()
print(json.dumps({"kind": kind, "data_token_accuracy": acc, "scored": int(mask.sum())}))
