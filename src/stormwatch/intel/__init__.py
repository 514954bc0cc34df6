"""Partner threat intelligence: STIX 2.1 import (:mod:`.importer`), pattern compilation
(:mod:`.patterns`) and indicator matching against account observables (:mod:`.matching`)."""
