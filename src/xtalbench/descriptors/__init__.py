"""Descriptors: composition vectors (`composition`), XRD patterns (`xrd`), averaged SOAP (`soap`)."""
