"""The HTTP edge kit every blueprint uses: Blueprint, request accessors, authentication, problem+json. Imports
the base layer only."""
