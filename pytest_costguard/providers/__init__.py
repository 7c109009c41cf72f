"""Provider adapters: one subpackage per SDK, each turning its SDK's traffic into guard calls."""
