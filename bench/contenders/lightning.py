"""PyTorch Lightning's ``Trainer.fit`` on a ``LightningModule``.

default: ``Trainer(max_epochs, accelerator, devices=1)`` and everything else at Lightning's
  defaults (progress bar, logger, checkpointing, model summary); the module logs its training
  loss with ``self.log`` as Lightning's docs do; plain Adam.
fast: the documented switches off (``enable_progress_bar``, ``logger``, ``enable_checkpointing``,
  ``enable_model_summary``, ``num_sanity_val_steps=0``), no ``self.log``, ``Adam(fused=True)``.
Both feed a ``DataLoader(TensorDataset, shuffle=True)``.
"""

import tempfile
import warnings

import _common as c

args = c.parse_args(("default", "fast"))
import_s, versions = c.timed_import("lightning", "torch", "lightning")

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")
fast = args.variant == "fast"
L.seed_everything(args.seed, verbose=False)
x, y, xv, yv = c.load_tensors("cpu")


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = c.mlp()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = F.cross_entropy(self.net(inputs), targets)
        if not fast:
            self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=c.LR, fused=fast)


class Clock(L.Callback):
    def __init__(self):
        self.clock = c.EpochClock(args.device)

    def on_train_epoch_start(self, trainer, module):
        self.clock.epoch_start(trainer.current_epoch)

    def on_train_end(self, trainer, module):
        self.clock.stop()


clock = Clock()
model = MLP()
loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
options = dict(enable_progress_bar=False, logger=False, enable_checkpointing=False,
               enable_model_summary=False, num_sanity_val_steps=0) if fast else {}
with tempfile.TemporaryDirectory(prefix="lightning-bench-") as root:
    trainer = L.Trainer(max_epochs=1 + args.epochs, accelerator=args.device, devices=1, callbacks=[clock],
                        default_root_dir=root, **options)
    trainer.fit(model, loader)
model.eval()
model.to(args.device)
c.report("lightning", args, import_s=import_s, clock=clock.clock, samples=len(x) * args.epochs,
         val_acc=c.accuracy(model, xv.to(args.device), yv.to(args.device)), versions=versions)
