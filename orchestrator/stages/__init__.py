"""The sweep's stages: gan (search), synth (synthetic sets + audit), classify (utility grid).

Stages read their resources from the config, resolved once by orchestrator.sweep.resolve_resources.
"""
