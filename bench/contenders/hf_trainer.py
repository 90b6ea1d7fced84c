"""Hugging Face ``transformers.Trainer`` on a small ``nn.Module`` that returns ``{"loss", "logits"}``.

Both variants fix what would change the math: ``lr_scheduler_type="constant"``,
``max_grad_norm=0`` (no clipping), ``weight_decay=0`` (AdamW == Adam), Adam betas/eps as torch's.
default: everything else at transformers' defaults (``optim="adamw_torch"``, logging and
  checkpoint saving every 500 steps, progress bar, ``report_to`` default).
fast: ``optim="adamw_torch_fused"``, ``disable_tqdm``, ``report_to="none"``, ``save_strategy="no"``,
  ``logging_strategy="no"``, ``eval_strategy="no"``, ``dataloader_num_workers=0``,
  ``dataloader_pin_memory=False``.
Both feed a map-style Dataset of ``{"x", "labels"}`` (the Trainer builds its own shuffled DataLoader).
"""

import os
import tempfile
import warnings

import _common as c

args = c.parse_args(("default", "fast"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import_s, versions = c.timed_import("hf_trainer", "torch", "transformers")

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

warnings.filterwarnings("ignore")
fast = args.variant == "fast"
torch.manual_seed(args.seed)
x, y, xv, yv = c.load_tensors("cpu")


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return len(x)

    def __getitem__(self, i):
        return {"x": x[i], "labels": y[i]}


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = c.mlp()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Clock(TrainerCallback):
    def __init__(self):
        self.clock = c.EpochClock(args.device)
        self.epochs = 0

    def on_epoch_begin(self, targs, state, control, **kw):
        self.clock.epoch_start(self.epochs)
        self.epochs += 1

    def on_train_end(self, targs, state, control, **kw):
        self.clock.stop()


model = Wrapper()
clock = Clock()
with tempfile.TemporaryDirectory(prefix="hf-bench-") as out:
    common = dict(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1 + args.epochs,
                  learning_rate=c.LR, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
                  adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, seed=args.seed,
                  use_cpu=args.device == "cpu")
    if fast:
        common.update(optim="adamw_torch_fused", disable_tqdm=True, report_to="none", save_strategy="no",
                      logging_strategy="no", eval_strategy="no", dataloader_num_workers=0,
                      dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=Data(), callbacks=[clock])
    trainer.train()
model.eval()
c.report("hf_trainer", args, import_s=import_s, clock=clock.clock, samples=len(x) * args.epochs,
         val_acc=c.accuracy(model.net, xv.to(args.device), yv.to(args.device)), versions=versions)
