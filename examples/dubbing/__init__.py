"""Speech-to-speech dubbing: multilingual Whisper, a translation hook, Voxtral in the speaker's cloned voice."""
