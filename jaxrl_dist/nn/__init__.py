"""Neural-network parts: flax torsos and heads (``networks``), LAPACK-free orthogonal
initialisation (``initializers``) and action distributions (``distributions``)."""
