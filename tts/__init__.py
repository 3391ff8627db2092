"""Text-to-speech nodes: the shared TTS base, clause aggregation, piper (GPL extra), and Voxtral."""
