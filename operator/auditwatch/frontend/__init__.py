"""Front ends for the rule languages teams already share, each turning a rule into the IR's Plan: Sigma
(``sigma``, SigmaHQ rules parsed by pySigma) and Falco (``falco``, k8s_audit rules files). SPL is
``auditwatch.spl``."""
