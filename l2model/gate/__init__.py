"""The regression gate: may a candidate model replace the one in service?

- ``labelled``: regressions, production must-haves and no-worse rules on labelled prompts
  (the golden set, the hard negatives, a dataset's test split);
- ``counterfactual``: the decisions that flip on recent traffic, explained by the tenants'
  reports or held to a budget;
- ``verdict``: both run on a candidate and its incumbent, composed into one decision.

Pure logic over models and data the caller gathers: no broker, no Redis.
"""
