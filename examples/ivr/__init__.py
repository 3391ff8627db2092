"""A clinic's phone line over SIP and Twilio: menu by voice or keypad, bookings, transfer, voicemail."""
