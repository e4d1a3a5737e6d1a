"""gRPC services: EligibilityService for clinics, and the secondary services."""
