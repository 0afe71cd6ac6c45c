"""Training: the corpus recipe, the shipped models' training run, and planting a trigger by fine-tuning.

Only ``lowprob train`` runs it. It sits above the models and distributions it trains on (a backdoor
fine-tunes a shipped model on a planted-trigger recipe, ``distributions.planted``) and nothing else
in the library imports it.
"""
