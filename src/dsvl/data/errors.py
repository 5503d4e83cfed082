"""The data side's configuration error (distinct from bad samples, which are skipped and counted)."""
from dsvl.errors import DataError


class DataConfigError(DataError):
    """A data config that cannot work (missing shards or tokenizer, unknown mode, bad weights...);
    raised before training starts, with a one-line message."""
