r"""IDM: Improved Distribution Matching for Dataset Condensation (Zhao et al., CVPR'23), a member of the
distribution-matching family (:mod:`ddjax.algorithms.distribution_family`) made of three parts:

- **partitioning** (the authors' ``--aug``, their "partitioning and expansion augmentation"): every stored image holds
  ``factor × factor`` cells, each decoded to a full-size image (:func:`~ddjax.algorithms.multiformation.decode_zoom`,
  bilinear, the authors' ``number_sign_augment``), so matching and evaluation see ``factor² · ipc`` images per class.
  At step 0 each cell is a different random real image of the class downscaled by ``1/factor`` (bilinear, i.e. the
  mean of each ``factor × factor`` block: the authors' ``downscale``; :func:`partitioned_real`);
- **feature extractors from a queue of networks trained on real data** (:func:`network_queue`): the queue starts with
  ``initial_networks`` (3) random networks; every ``new_every`` steps a new random one is pushed (the oldest dropped
  beyond ``queue_size``); each step matches with one member drawn uniformly and afterwards trains ``train_nets``
  (2) other uniformly drawn members ``train_steps`` SGD steps each on batches of ``train_batch`` real images drawn from
  the whole training set (cross-entropy, lr 0.01, momentum 0.9, weight decay 5e-4, no augmentation);
- **class-aware distribution regularisation** (:func:`class_aware_term`): the cross-entropy of the matching network on
  the augmented decoded synthetic images, weighted by that network's training accuracy in percent (its top-1
  accuracy on the real batches it was trained on since the last reset, every ``acc_window`` steps; 0 for a network
  not trained yet: torchnet's ``ClassErrorMeter`` in the authors' code).

.. math:: \mathcal L = \sum_c \|\bar f_q(a_c(R_c)) - \bar f_q(a_c(\mathrm{dec}(S)_c))\|^2
          + \lambda_{ce}\,\mathrm{acc}_q \sum_c \mathrm{CE}\big(f_q(a_c(\mathrm{dec}(S)_c)), c\big)

with ``f_q`` the drawn queue network. The queue (stacked variables, optimiser states, accuracy counters, the number
of networks made) lives in ``state.extras.networks``; all classes are one XLA program. Facts from the authors' code
(``uitrbn/IDM``, ``IDM_cifar10.py`` and ``command.txt``): ``net_num`` 100, ``net_generate_interval`` 30,
``model_train_steps`` 10, ``fetch_net_num`` 2, ``trained_bs`` 256, ``lr_net`` 0.01 with ``--net_decay``,
``ce_weight`` 0.5 (0.1 at IPC 50), ``lr_img`` 0.2, ``batch_real`` 256, accuracy meters reset at every evaluation
(``eval_interval`` 100). Where ddjax differs, and why: docs/design.md, "IDM".
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh

from ddjax import models
from ddjax.algorithms import samplers
from ddjax.algorithms.base import Algorithm, RealPool, Term, apply_gradients, sample_per_class
from ddjax.algorithms.distribution_family import (Networks, TermInputs, distribution_matching, embeddings,
                                                  embeddings_and_logits, mean_embedding_term)
from ddjax.algorithms.gradient_matching import Parameterization, multi_formation, network_sgd
from ddjax.algorithms.multiformation import mosaic
from ddjax.errors import ConfigError
from ddjax.sharding import split_batch

__all__ = ["IDMParts", "NetworkQueue", "class_aware_term", "default_config", "idm_parts", "make", "network_queue",
           "partitioned_real", "queue_config", "sample_flat"]


def queue_config() -> ml_collections.ConfigDict:
    """IDM's own fields (``config.idm``, and ``config.iid.idm`` for IID on IDM): the authors' CIFAR-10 IPC 10
    command (``command.txt``) and their script's defaults."""
    return ml_collections.ConfigDict(dict(
        factor=2,                   # partitioning: factor x factor cells per stored image (--aug)
        ce_weight=0.5,              # class-aware regularisation weight (--ce_weight; 0.1 at IPC 50); 0: off
        queue_size=100,             # --net_num
        new_every=30,               # --net_generate_interval (5 at CIFAR IPC 1)
        initial_networks=3,         # the queue's random networks before the first push
        train_nets=2,               # --fetch_net_num: queue members trained after every step
        train_steps=10,             # --model_train_steps
        train_batch=256,            # --trained_bs: real images per training step, from the whole training set
        lr_net=0.01, momentum_net=0.9, weight_decay_net=5e-4,  # --lr_net with --net_decay
        acc_window=100,             # steps between resets of the accuracy meters (the authors' --eval_interval)
    ))


def default_config() -> ml_collections.ConfigDict:
    """IDM hyper-parameters (``config.idm``): the image optimiser and real batch (``lr_img`` 0.2, SGD momentum 0.5,
    256 real images per class) and :func:`queue_config`."""
    c = queue_config()
    c.lr_img, c.momentum, c.batch_real = 0.2, 0.5, 256
    c.real_batch = samplers.real_batch_config()  # random (IDM) or DREAM+'s representatives
    return c


# ------------------------------------------------------------------------------------------ partitioning


def partitioned_real(ipc: int, factor: int) -> Callable[[jax.Array, jax.Array, RealPool], jax.Array]:
    """IDM's init (``--init real --aug``): stored image ``m`` of class ``c`` is a ``factor × factor`` mosaic of
    ``factor²`` distinct random real images of ``c``, each downscaled by ``1/factor`` bilinearly (half-pixel centres,
    no antialiasing = PyTorch ``F.upsample(scale_factor=0.5, mode='bilinear')``: the mean of each block). Image sides
    that are not multiples of ``factor`` fall back to IDC's nearest-neighbour :func:`mosaic`."""
    def initial(key: jax.Array, stored: jax.Array, real: RealPool) -> jax.Array:
        parts = sample_per_class(key, real, ipc * factor * factor)   # (K, f² · ipc, H, W, C)
        k, _, h, w, c = parts.shape
        if h % factor or w % factor:
            return mosaic(parts, factor).reshape(stored.shape)
        cells = jax.image.resize(parts, (k, factor * factor * ipc, h // factor, w // factor, c), method="linear",
                                 antialias=False)
        # part k' · ipc + m fills cell (k' // factor, k' % factor) of stored image m (multiformation.mosaic's order)
        cells = cells.reshape(k, factor, factor, ipc, h // factor, w // factor, c)
        return cells.transpose(0, 3, 1, 4, 2, 5, 6).reshape(stored.shape)
    return initial


# ------------------------------------------------------------------------------------------ the queue


class NetworkQueue(NamedTuple):
    """IDM's queue as a ring buffer of ``Q`` slots: slot ``count % Q`` receives the next network, so the valid
    members are slots ``0 .. min(count, Q) - 1``.

    variables / opt_state: every slot's model variables and network-optimiser state, stacked ``(Q, ...)``;
    correct / seen ``(Q,)``: correct predictions and images seen in training since the last meter reset;
    count: networks made so far (int32)."""
    variables: Any
    opt_state: Any
    correct: jax.Array
    seen: jax.Array
    count: jax.Array


def sample_flat(key: jax.Array, real: RealPool, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``n`` real images drawn without replacement, uniformly from the whole pool (the authors'
    ``get_images(c=None, n)``: a permutation of all indices), their labels, and a validity weight (0 only when the
    pool holds fewer than ``n`` images)."""
    num_classes, pool = real.images.shape[:2]
    valid = (jnp.arange(pool)[None, :] < real.counts[:, None]).reshape(-1)
    scores = jnp.where(valid, jax.random.uniform(key, valid.shape), -1.0)
    _, idx = jax.lax.top_k(scores, n)
    images = real.images.reshape((num_classes * pool,) + real.images.shape[2:])[idx]
    return images, (idx // pool).astype(jnp.int32), valid[idx].astype(jnp.float32)


def network_queue(model: nn.Module, image_shape: tuple[int, int, int], *, size: int, new_every: int,
                  initial: int, train_nets: int, train_steps: int, train_batch: int,
                  tx: optax.GradientTransformation, acc_window: int, mesh: Mesh | None = None) -> Networks:
    """IDM's feature extractors (module doc) as the family's :class:`Networks` part.

    ``draw(key, queue, step)``: at ``step % new_every == 0`` push a new random network (its meter at 0); at
    ``step % acc_window == 0``, ``step > 0``, reset every meter; then one valid member uniformly; ``info``:
    ``{"acc": its accuracy in percent (0 before any training), "index": its slot}``.
    ``update(key, queue, step, real)``: ``train_nets`` distinct valid members drawn uniformly each take
    ``train_steps`` SGD steps (``tx``) on the mean cross-entropy of ``train_batch`` images from :func:`sample_flat`
    (split over the mesh's ``data`` axis), their meters counting the training batches' correct predictions."""
    image_shape = tuple(image_shape)
    split = split_batch(mesh, train_batch, f"train_batch={train_batch}")

    def new(key):
        variables = models.init_model(model, key, image_shape)
        return variables, tx.init(variables["params"])

    def init(key: jax.Array) -> NetworkQueue:
        variables, opt_state = jax.vmap(new)(jax.random.split(key, size))
        zeros = jnp.zeros((size,), jnp.float32)
        return NetworkQueue(variables, opt_state, zeros, zeros, jnp.asarray(min(initial, size), jnp.int32))

    def push(key: jax.Array, q: NetworkQueue) -> NetworkQueue:
        slot = q.count % size
        variables, opt_state = new(key)
        put = lambda stacked, one: jax.tree.map(lambda a, b: a.at[slot].set(b), stacked, one)  # noqa: E731
        return NetworkQueue(put(q.variables, variables), put(q.opt_state, opt_state), q.correct.at[slot].set(0.0),
                            q.seen.at[slot].set(0.0), q.count + 1)

    def draw(key: jax.Array, q: NetworkQueue, step: jax.Array):
        k_push, k_pick = jax.random.split(key)
        q = jax.lax.cond(step % new_every == 0, lambda: push(k_push, q), lambda: q)
        reset = (step % acc_window == 0) & (step > 0)
        q = q._replace(correct=jnp.where(reset, 0.0, q.correct), seen=jnp.where(reset, 0.0, q.seen))
        index = jax.random.randint(k_pick, (), 0, jnp.minimum(q.count, size))
        variables = jax.tree.map(lambda a: a[index], q.variables)
        acc = jnp.where(q.seen[index] > 0, 100.0 * q.correct[index] / jnp.maximum(q.seen[index], 1.0), 0.0)
        return q, variables, {"acc": acc, "index": index}

    def train_one(key, variables, opt_state, real):
        def body(carry, t):
            variables, opt_state, correct, seen = carry
            x, y, w = sample_flat(jax.random.fold_in(key, t), real, train_batch)
            x = split(x)

            def loss_fn(params):
                logits, new_vars = models.apply_model(model, {**variables, "params": params}, x, train=True)
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
                return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0), (logits, new_vars)

            (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
            params, opt_state = apply_gradients(tx, grads, opt_state, variables["params"])
            hits = jnp.sum((jnp.argmax(logits, -1) == y) * w)
            return ({**new_vars, "params": params}, opt_state, correct + hits, seen + jnp.sum(w)), loss

        (variables, opt_state, correct, seen), losses = jax.lax.scan(
            body, (variables, opt_state, jnp.float32(0), jnp.float32(0)), jnp.arange(train_steps))
        return variables, opt_state, correct, seen, jnp.mean(losses)

    def update(key: jax.Array, q: NetworkQueue, step: jax.Array, real: RealPool):
        del step
        if train_steps == 0:
            return q, {}
        k_pick, k_train = jax.random.split(key)
        valid = jnp.arange(size) < jnp.minimum(q.count, size)
        picks = jnp.argsort(jnp.where(valid, jax.random.uniform(k_pick, (size,)), 2.0))[:train_nets]
        active = valid[picks]
        take = lambda tree: jax.tree.map(lambda a: a[picks], tree)  # noqa: E731
        variables, opt_state, correct, seen, loss = jax.vmap(train_one, in_axes=(0, 0, 0, None))(
            jax.random.split(k_train, train_nets), take(q.variables), take(q.opt_state), real)

        def put(stacked, trained):
            def one(a, b):
                keep = active.reshape((-1,) + (1,) * (b.ndim - 1))
                return a.at[picks].set(jnp.where(keep, b, a[picks]))
            return jax.tree.map(one, stacked, trained)

        q = NetworkQueue(put(q.variables, variables), put(q.opt_state, opt_state),
                         q.correct.at[picks].add(jnp.where(active, correct, 0.0)),
                         q.seen.at[picks].add(jnp.where(active, seen, 0.0)), q.count)
        return q, {"net_loss": jnp.sum(jnp.where(active, loss, 0.0)) / jnp.maximum(jnp.sum(active), 1)}

    return Networks(init=init, draw=draw, update=update)


# ------------------------------------------------------------------------------------------ the term


def class_aware_term(weight: float) -> Term:
    r"""IDM's class-aware distribution regularisation (``loss_ce``):
    :math:`\mathrm{acc}_q\sum_c \frac1n\sum_{i} -\log \mathrm{softmax}(f_q(s_{c,i}))_c`, the mean cross-entropy of
    the drawn network ``f_q`` on each class's ``n`` augmented decoded synthetic images, summed over classes, times
    the network's training accuracy in percent (``TermInputs.network["acc"]``, no gradient). Also reports
    ``syn_ce`` (the class-mean CE) and ``net_acc``."""
    def fn(x: TermInputs):
        logits = x.syn.logits
        k, n = logits.shape[:2]
        labels = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[:, None], (k, n))
        ce = jnp.sum(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), axis=1))
        acc = jax.lax.stop_gradient(x.network["acc"])
        return acc * ce, {"syn_ce": ce / k, "net_acc": acc}
    return Term("loss_ce", weight, fn)


# ------------------------------------------------------------------------------------------ assembly


class IDMParts(NamedTuple):
    """What IDM adds to the family: its terms (DM's mean-embedding distance, the class-aware term), features,
    the network queue, the partitioning and its step-0 init."""
    terms: tuple[Term, ...]
    features: Callable[[Any, jax.Array], Any]
    networks: Networks
    images: Parameterization
    initial: Callable[[jax.Array, jax.Array, RealPool], jax.Array] | None


def _check(q: ml_collections.ConfigDict, section: str) -> None:
    for name in ("queue_size", "new_every", "initial_networks", "train_nets", "train_batch", "acc_window", "factor"):
        if q[name] < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {q[name]}; set --config.{section}.{name}")
    if q.train_nets > q.queue_size:
        raise ConfigError(f"{section}.train_nets={q.train_nets} exceeds {section}.queue_size={q.queue_size}: at most "
                          f"every queue member trains each step; lower --config.{section}.train_nets")
    if q.train_steps < 0:
        raise ConfigError(f"{section}.train_steps must be >= 0, got {q.train_steps}")
    if not q.ce_weight >= 0:
        raise ConfigError(f"{section}.ce_weight must be >= 0, got {q.ce_weight}; 0 turns the class-aware term off")
    if not q.lr_net > 0:
        raise ConfigError(f"{section}.lr_net must be > 0, got {q.lr_net}")


def idm_parts(q: ml_collections.ConfigDict, section: str, model: nn.Module, image_shape: tuple[int, int, int],
              ipc: int, mesh: Mesh | None = None) -> IDMParts:
    """IDM's parts from its fields ``q`` (:func:`queue_config`; ``section`` names them in errors)."""
    _check(q, section)
    terms = [mean_embedding_term()]
    if q.ce_weight > 0:
        terms.append(class_aware_term(float(q.ce_weight)))
    tx = network_sgd(q.lr_net, q.momentum_net, q.weight_decay_net)
    networks = network_queue(model, image_shape, size=q.queue_size, new_every=q.new_every,
                             initial=q.initial_networks, train_nets=q.train_nets, train_steps=q.train_steps,
                             train_batch=q.train_batch, tx=tx, acc_window=q.acc_window, mesh=mesh)
    features = embeddings_and_logits(model) if q.ce_weight > 0 else embeddings(model)
    return IDMParts(tuple(terms), features, networks, multi_formation(ipc, q.factor),
                    partitioned_real(ipc, q.factor) if q.factor > 1 else None)


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
         image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """IDM's ``(init, step)``: the family's step with :func:`idm_parts`. Reads ``config.idm``, ``config.ipc`` and
    ``config.dsa_strategy``."""
    hp = config.idm
    parts = idm_parts(hp, "idm", model, image_shape, config.ipc, mesh)
    return distribution_matching(config, hp, "idm", model, num_classes, image_shape, mesh, terms=parts.terms,
                                 features=parts.features,
                                 sampler=samplers.from_config(hp.real_batch, hp.batch_real),
                                 networks=parts.networks, images=parts.images, initial=parts.initial)
