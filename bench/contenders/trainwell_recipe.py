"""trainwell's ``mnist`` recipe path, as ``trainwell train mnist`` runs it: the config, the
recipe's ``build()`` (its in-memory loader and fused Adam), ``tw.Trainer`` with a run
directory (metrics.jsonl logging, epoch checkpoints, final weights at the defaults; the final
weights are written after the clock stops), then ``fit``. Validation runs once at the end on
the official 10k test set, like every contender.

The recipe trains on its own 54,000-image split of the 60k training set (seeded), the other
contenders on the first 54,000: the same amount of work per epoch.
"""

import tempfile

import _common as c

args = c.parse_args()
import_s, versions = c.timed_import("trainwell_recipe", "torch", "trainwell", "trainwell.trainer",
                                    "trainwell.recipes.mnist")

import torch

import trainwell as tw
from trainwell.config import TrainConfig
from trainwell.recipes import get_recipe
from trainwell.runtime import seed_everything

c.ensure_cache()
config = TrainConfig(recipe="mnist", epochs=1 + args.epochs, lr=c.LR, batch_size=args.batch_size,
                     device=args.device, seed=args.seed)
device = torch.device(args.device)
seed_everything(config.seed)  # as `trainwell train` does before build(): the same initial weights every run
parts = get_recipe("mnist").build(config, device)


clock = c.TrainerClock(args.device)
with tempfile.TemporaryDirectory(prefix="tw-bench-") as run_dir:
    trainer = tw.Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip,
                         device=device, precision=config.precision, callbacks=[*parts.callbacks, clock],
                         run_dir=run_dir, seed=config.seed, checkpoint_every_steps=config.checkpoint_every,
                         log_every_steps=config.log_every, keep_checkpoints=config.keep_checkpoints, verbose=False)
    trainer.fit(parts.train, None, epochs=config.epochs)
    result = trainer.test(parts.test)
c.report("trainwell_recipe", args, import_s=import_s, clock=clock.clock,
         samples=parts.train.num_samples * args.epochs, val_acc=100.0 * result["test_acc"],
         train_loss=trainer.history["train_loss"][-1], versions=versions)
