"""The pipeline: the loop's stages run in order — today the demo's, later the automated daily pipeline."""
