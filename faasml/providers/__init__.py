"""Function backends (FaaS platforms), one subpackage each."""
