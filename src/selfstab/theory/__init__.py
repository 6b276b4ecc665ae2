"""The theory of self-stabilization, executable (section 4, Appendices B and H).

* :mod:`.simplified` — eq. (3), the simplified dynamics of ``(x_t, y_t)``;
* :mod:`.ode` — eq. (4), its conserved quantity (Lemma 3), exact orbit extremes
  (Lambert W), the period, Corollary 1;
* :mod:`.stages` — the four stages of section 4.1 as labels on a trajectory;
* :mod:`.toy` — the Appendix B toy model, on which GD is eq. (3) exactly;
* :mod:`.scale_invariance` — Appendix H: a scale-invariant loss with weight decay.
"""

from .ode import (OdeOrbit, OrbitExtremes, conserved, corollary1_bounds, delta, h, integrate_ode,
                  linearized_period, orbit_extremes, period_quadrature)
from .scale_invariance import scale_invariance_experiment, scale_invariant_loss, scale_invariant_objective
from .simplified import simplified_dynamics
from .stages import STAGE_NAMES, stage_labels, stage_spans
from .toy import (to_simplified, toy_alpha, toy_beta, toy_eigvec, toy_gd, toy_grad_sharpness, toy_loss,
                  toy_objective, toy_sharpness, toy_sharpness_exact, toy_start)

__all__ = [
    "OdeOrbit", "OrbitExtremes", "STAGE_NAMES", "conserved", "corollary1_bounds", "delta", "h", "integrate_ode",
    "linearized_period", "orbit_extremes", "period_quadrature", "scale_invariance_experiment",
    "scale_invariant_loss", "scale_invariant_objective", "simplified_dynamics", "stage_labels", "stage_spans", "to_simplified",
    "toy_alpha", "toy_beta", "toy_eigvec", "toy_gd", "toy_grad_sharpness", "toy_loss", "toy_objective",
    "toy_sharpness", "toy_sharpness_exact", "toy_start",
]
