"""A voice assistant in the browser (WebRTC page) with one tool: a unit converter."""
