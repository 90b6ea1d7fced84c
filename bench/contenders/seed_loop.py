"""The seeds' own loop (seed 000 ``mnist_from_scratch.py`` / seed 001 pattern 1):
``DataLoader(TensorDataset, shuffle=True)``, plain ``torch.optim.Adam``, ``zero_grad()``,
forward, loss, backward, step, and the epoch's mean loss summed with ``loss.item()``
(seed 000 prints it every epoch).
"""

import _common as c

args = c.parse_args()
import_s, versions = c.timed_import("seed_loop", "torch")

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(args.seed)
x, y, xv, yv = c.load_tensors("cpu")
loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
device = torch.device(args.device)
model = c.mlp().to(device)
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=c.LR)


def epoch() -> float:
    model.train()
    running_loss = 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return running_loss / len(loader)


clock = c.EpochClock(args.device)
for index in range(1 + args.epochs):  # epoch 0: the warm-up
    clock.epoch_start(index)
    train_loss = epoch()
clock.stop()
model.eval()
c.report("seed_loop", args, import_s=import_s, clock=clock, samples=len(x) * args.epochs,
         val_acc=c.accuracy(model, xv.to(device), yv.to(device)), train_loss=train_loss, versions=versions)
