"""Your own models, outside the genlab package (docs/models.md, "Your own model")."""
