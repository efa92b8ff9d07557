"""Evaluation: sample metrics with noise floors, the variational bound, exact likelihoods."""
