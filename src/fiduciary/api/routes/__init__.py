"""One router per feature; ``fiduciary.api.app`` includes them."""
