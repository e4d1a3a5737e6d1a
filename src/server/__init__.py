"""gRPC services: EligibilityService for clinics, and the writer process's services."""
