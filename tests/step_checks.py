"""Shared test check: an algorithm step's image update against finite differences of the loss it reports."""
import numpy as np


def assert_step_gradient_matches_fd(step, state, data, *, directions: int = 2, eps: float = 1e-2,
                                    rtol: float = 2e-2, atol: float = 1e-4, seed: int = 0,
                                    along_gradient: bool = False) -> None:
    """``step`` (jitted) must use SGD at lr 1 on the images; its first update is then minus the gradient.

    Compares that gradient's projection on random unit directions with central differences of ``metrics["loss"]``.
    ``along_gradient``: first the gradient's own unit direction, where the projection is largest (‖∇L‖, about
    √size times a random direction's), for a loss whose float32 values resolve too little of a random one's change
    (an MTT loss near 1 resolves ~1e-7).
    """
    images = state.synthetic.images
    grad = np.asarray(images - step(state, data)[0].synthetic.images, np.float64)

    def loss_at(x):
        return float(step(state.replace(synthetic=state.synthetic.replace(images=x)), data)[1]["loss"])

    rng = np.random.default_rng(seed)
    chosen = [grad.astype(np.float32)] if along_gradient else []
    for direction in chosen + [rng.normal(size=images.shape).astype(np.float32) for _ in range(directions)]:
        direction /= np.linalg.norm(direction)
        fd = (loss_at(images + eps * direction) - loss_at(images - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(fd, np.sum(grad * direction), rtol=rtol, atol=atol)
