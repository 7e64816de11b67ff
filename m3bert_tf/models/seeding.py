"""Initial weights and dropout streams from an explicit seed, no global state.

    model = build_...(...)
    seed_weights(model, seed=config.seed)                 # every variable
    seed_weights(model, seed, skip=model.encoder)         # all but a loaded part

Keras draws an unseeded initializer's seed from Python's global `random`
module (seeded for the whole process by `keras.utils.set_random_seed`,
which a library must not call: the next job in the process would inherit
it). Here every variable is drawn again by its layer's own initializer,
seeded by (seed, its place in the model), and every seed generator
(dropout) starts at (seed, its place): the same seed gives the same model in any
process, whatever ran before, and builds under a distribution strategy the
same on every replica and worker.
"""

import hashlib

import keras
import numpy as np


def derived_seed(seed: int, path: str) -> int:
    """A 31-bit seed of (seed, a place in the model): stable across processes."""
    digest = hashlib.sha256(f"{seed}/{path}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _initialized(layer):
    """(variable, its initializer) pairs a layer owns: `kernel` is drawn by
    `kernel_initializer`, `gamma` by `gamma_initializer`, and so on."""
    for name, initializer in vars(layer).items():
        if not name.endswith("_initializer") or initializer is None:
            continue
        variable = getattr(layer, name[: -len("_initializer")], None)
        if isinstance(variable, keras.Variable):
            yield variable, initializer


def seed_weights(model: keras.Model, seed: int, skip: keras.Layer | None = None) -> None:
    """Draws `model`'s weights and dropout streams again from `seed`.

    Args:
      model: a built Keras model (its variables exist).
      seed: the run's seed.
      skip: a sub-layer whose variables are kept (loaded weights).
    """
    kept = {id(v) for v in skip.variables} if skip is not None else set()
    # A place is (the layer's position in the model, the variable's name):
    # variable paths carry process-wide name counters ("seed_generator_3").
    layers = model._flatten_layers(include_self=True, recursive=True)
    for position, layer in enumerate(layers):
        for variable, initializer in _initialized(layer):
            if id(variable) in kept:
                continue
            config = initializer.get_config()
            if "seed" in config:  # a random initializer; constants need none
                config["seed"] = derived_seed(seed, f"{position}/{variable.name}")
            fresh = initializer.__class__.from_config(config)
            variable.assign(fresh(variable.shape, dtype=variable.dtype))
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            state = generator.state
            if id(state) not in kept:
                start = np.array([derived_seed(seed, f"{position}/seed_generator"), 0])
                state.assign(keras.ops.cast(start, state.dtype))
