"""Presentation: the paper's figures as plotly functions over DataFrames (`figures`) and the circuitsvis per-token
projection view (`views`). They read no files; the figures stage and the notebooks load the tables."""
