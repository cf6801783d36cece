"""Transcriptions of the papers' update rules, for conformance tests where torch.optim has none.

Each rule is written from the paper's pseudo-code, elementwise on float64 numpy arrays (the
arithmetic of a scalar transcription, vectorised over the elements of one parameter), with no
ravine code. :class:`Reference` drives such a rule like an optimizer.
"""
