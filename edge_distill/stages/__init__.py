"""The build's stages, one module each: its settings (only the options it reads), its result, and the function
that computes it.  ``pipeline.py`` runs them in order; ``runner.Stages`` reuses a stage whose key (its name, its
settings and its inputs' keys) matches a finished one.  Stages reach task-specific work (vision, text) only
through the ``tasks.Task`` they are given, and never import the pipeline."""
