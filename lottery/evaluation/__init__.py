"""How well a model does, beside what chance does: theta0's grounding criteria (`grounding`), the task
metrics (`metrics`, tie-aware through `ties`) and each task's chance level (`chance`).
"""
