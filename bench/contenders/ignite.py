"""PyTorch Ignite's ``create_supervised_trainer``.

default: ``create_supervised_trainer(model, Adam, CrossEntropyLoss(), device)`` as documented
  (its default ``output_transform`` calls ``loss.item()`` every step); plain Adam.
fast: ``Adam(fused=True)`` and an ``output_transform`` that keeps the loss on the device.
Both feed a ``DataLoader(TensorDataset, shuffle=True)``.
"""

import _common as c

args = c.parse_args(("default", "fast"))
import_s, versions = c.timed_import("ignite", "torch", "ignite")

import torch
from ignite.engine import Events, create_supervised_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

fast = args.variant == "fast"
torch.manual_seed(args.seed)
x, y, xv, yv = c.load_tensors("cpu")
loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
model = c.mlp().to(args.device)
optimizer = torch.optim.Adam(model.parameters(), lr=c.LR, fused=fast)
options = {"output_transform": lambda x, y, y_pred, loss: loss.detach()} if fast else {}
trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss(), device=args.device, **options)
clock = c.EpochClock(args.device)


@trainer.on(Events.EPOCH_STARTED)
def _start(engine):
    clock.epoch_start(engine.state.epoch - 1)  # ignite counts epochs from 1


@trainer.on(Events.COMPLETED)
def _stop(engine):
    clock.stop()


trainer.run(loader, max_epochs=1 + args.epochs)
model.eval()
c.report("ignite", args, import_s=import_s, clock=clock, samples=len(x) * args.epochs,
         val_acc=c.accuracy(model, xv.to(args.device), yv.to(args.device)), versions=versions)
