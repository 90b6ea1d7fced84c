"""Keras 3 on the torch backend (``KERAS_BACKEND=torch``): a Sequential of Dense layers and ``model.fit``
on numpy arrays (Keras shuffles each epoch). Adam's epsilon is set to torch's 1e-8 and the
Dense layers are initialised as torch's ``nn.Linear`` (Keras' default Glorot init would be a different model).

default: ``model.fit(..., verbose="auto")`` (the progress bar), ``compile`` at its defaults
  (``jit_compile="auto"``), plus the ``accuracy`` metric most Keras examples compile with.
fast: ``verbose=0``, no metrics, ``jit_compile=False``.
"""

import os

import _common as c

args = c.parse_args(("default", "fast"))
os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import_s, versions = c.timed_import("keras", "torch", "keras")

import keras
import numpy as np
import torch

fast = args.variant == "fast"
keras.utils.set_random_seed(args.seed)
xt, yt, xv_np, yv_np = c.load_numpy()
x, _, xv, yv = (t.numpy() if isinstance(t, torch.Tensor) else t for t in
                (c.normalize(torch.from_numpy(xt)), None, c.normalize(torch.from_numpy(xv_np)), yv_np))



def dense(units, fan_in, **kw):
    """A Dense layer initialised like torch's nn.Linear (uniform +-1/sqrt(fan_in)), so the model is the same."""
    bound = fan_in ** -0.5
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                              bias_initializer=keras.initializers.RandomUniform(-bound, bound), **kw)


model = keras.Sequential([keras.Input((784,)), dense(256, 784, activation="relu"), dense(128, 256, activation="relu"),
                          dense(10, 128)])
compile_options = dict(jit_compile=False) if fast else dict(metrics=["accuracy"])
model.compile(optimizer=keras.optimizers.Adam(learning_rate=c.LR, epsilon=1e-8),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_options)


class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.clock = c.EpochClock(args.device)

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.epoch_start(epoch)

    def on_train_end(self, logs=None):
        self.clock.stop()


clock = Clock()
model.fit(x, yt, batch_size=args.batch_size, epochs=1 + args.epochs, shuffle=True, callbacks=[clock],
          verbose=0 if fast else "auto")
logits = model.predict(xv, batch_size=1000, verbose=0)
acc = 100.0 * float((np.argmax(logits, -1) == yv).mean())
c.report("keras", args, import_s=import_s, clock=clock.clock, samples=len(x) * args.epochs,
         val_acc=acc, versions=versions)
