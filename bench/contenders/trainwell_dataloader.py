"""A user's own ``tw.Trainer``: plain ``DataLoader(TensorDataset, shuffle=True)`` and plain
(non-fused) ``torch.optim.Adam`` — the seed loop's data and optimizer, trainwell's loop.
A run directory is given, so logging and checkpointing run at their defaults.
"""

import tempfile

import _common as c

args = c.parse_args()
import_s, versions = c.timed_import("trainwell_dataloader", "torch", "trainwell", "trainwell.trainer")

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainwell as tw

torch.manual_seed(args.seed)
x, y, xv, yv = c.load_tensors("cpu")
train = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
val = DataLoader(TensorDataset(xv, yv), batch_size=1000)
model = c.mlp()
optimizer = torch.optim.Adam(model.parameters(), lr=c.LR)


clock = c.TrainerClock(args.device)
with tempfile.TemporaryDirectory(prefix="tw-bench-") as run_dir:
    trainer = tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), device=args.device, callbacks=[clock],
                         run_dir=run_dir)
    trainer.fit(train, epochs=1 + args.epochs)
    _, acc = trainer.evaluate(val)
c.report("trainwell_dataloader", args, import_s=import_s, clock=clock.clock,
         samples=len(x) * args.epochs, val_acc=100.0 * acc, train_loss=trainer.history["train_loss"][-1],
         versions=versions)
