"""BatchNorm settings shared by every layer and backbone in the package."""

# PyTorch's BatchNorm momentum 0.1 (the reference recipe's) is Keras's 0.9; Keras's own
# default of 0.99 leaves the moving statistics far behind on short runs and small data,
# so evaluation-mode accuracy collapses.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
