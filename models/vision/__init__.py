"""The vision front end: faces, 68-point landmarks, tracking, mouth crops, lip aperture, active speaker."""
