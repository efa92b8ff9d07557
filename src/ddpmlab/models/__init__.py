"""Networks, the models of each process family (``diffusion_model``, ``flow_model``, ``guidance``) and,
beside them, their exact oracles: for Gaussian-mixture data (``oracle``, ``flow_oracle``,
``conditional_oracle``) and for a finite training set (``empirical_oracle``: the optimum that memorises),
each a model of its family's contract, sampled and evaluated like a trained one."""
