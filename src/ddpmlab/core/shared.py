"""The base of the parameterisation's registry objects (``MeanType``, ``VarType``): stateless and shared."""


class Shared:
    """A registry object is stateless and shared: a copied model (the EMA's) keeps the same one."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
