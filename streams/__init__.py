"""The Faust application and its agents: one box of the data-flow diagram per module."""
