"""Meta's Cloud API webhook: the signature check, the payload's shape, storing a delivery, the view."""
