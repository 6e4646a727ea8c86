"""The seven downstream tasks of the paper (VQA, GQA, VCR, SNLI-VE, RefCOCO+, retrieval, NLVR2)."""
