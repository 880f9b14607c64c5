"""The send pipeline (:class:`SendPipeline`) and its render workers (:mod:`.workers`)."""

from digest.pipeline.send import ResultCallback, SendPipeline

__all__ = ["ResultCallback", "SendPipeline"]
