"""The send pipeline (:class:`~digest.pipeline.send.SendPipeline`) and its render workers
(:mod:`.workers`).

Nothing is imported here: a render worker imports :mod:`.workers` alone, without the
delivery stack that :mod:`.send` needs (aiosmtplib, the state backends, the sources).
"""
