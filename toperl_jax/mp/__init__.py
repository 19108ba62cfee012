"""Movement primitives: ProDMP decoding in pure JAX (see `prodmp.py` for the math)."""

from toperl_jax.mp.prodmp import (
    ProDMPBasis,
    ProDMPConfig,
    decode_token_actions,
    fix_relative_goal,
    prodmp_basis,
    prodmp_trajectory,
    weights_goal_scale,
)

__all__ = ["ProDMPBasis", "ProDMPConfig", "decode_token_actions", "fix_relative_goal", "prodmp_basis", "prodmp_trajectory", "weights_goal_scale"]
