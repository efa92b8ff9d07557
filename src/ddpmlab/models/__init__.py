"""Networks and reverse-process models. Every model used for sampling or evaluation offers
``p_mean_variance(x_t, t) -> (mean, variance)`` for p(x_{t-1} | x_t) and a ``schedule``."""
