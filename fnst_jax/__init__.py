"""fnst_jax: fast neural style transfer in JAX/Flax."""
