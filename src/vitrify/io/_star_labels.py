"""Value types of common RELION labels (private).

A STAR file does not say which type a column has; RELION knows it from its label table. We keep
the same knowledge for the labels where it matters:

* text labels stay text even when they look like numbers (``001`` stays ``"001"``);
* double labels are read as float64 even when every value is integral (``rlnCoordinateX 1024``),
  so that later float assignments never hit an int64 column, and are written in RELION's double
  format (``1024.000000``) even when the DataFrame holds integers.

Unknown labels are typed from their values (int64, then float64, then text).
"""

from __future__ import annotations

#: Labels whose values are text even when they look like numbers.
STRING_LABELS = frozenset(
    {
        "rlnJobOptionValue", "rlnJobOptionVariable", "rlnSchemeStringVariableValue",
        "rlnSchemeStringVariableResetValue", "rlnSchemeOperatorInput1", "rlnSchemeOperatorInput2",
        "rlnMicrographMetadata", "rlnMicrographCoordinates", "rlnCtfImage", "rlnCtfPowerSpectrum",
        "rlnReferenceImage", "rlnMaskName", "rlnPipeLineProcessAlias",
    }
)

#: Labels RELION stores as doubles (read as float64, written as RELION doubles).
DOUBLE_LABELS = frozenset(
    {
        # coordinates, orientations, offsets
        "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOriginX", "rlnOriginY", "rlnOriginZ",
        "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnOriginXPrior", "rlnOriginYPrior",
        "rlnOriginXPriorAngst", "rlnOriginYPriorAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
        "rlnAngleRotPrior", "rlnAngleTiltPrior", "rlnAnglePsiPrior", "rlnHelicalTrackLength",
        "rlnHelicalTrackLengthAngst",
        # CTF and optics
        "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfAstigmatism", "rlnCtfBfactor",
        "rlnCtfScalefactor", "rlnPhaseShift", "rlnCtfMaxResolution", "rlnCtfFigureOfMerit",
        "rlnCtfValidationScore", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
        "rlnMagnification", "rlnDetectorPixelSize", "rlnImagePixelSize", "rlnMicrographPixelSize",
        "rlnMicrographOriginalPixelSize", "rlnBeamTiltX", "rlnBeamTiltY",
        # motion, picking, refinement statistics
        "rlnAccumMotionTotal", "rlnAccumMotionEarly", "rlnAccumMotionLate", "rlnMicrographDoseRate",
        "rlnMicrographPreExposure", "rlnMicrographBinning", "rlnMicrographShiftX", "rlnMicrographShiftY",
        "rlnAutopickFigureOfMerit", "rlnNormCorrection", "rlnLogLikeliContribution",
        "rlnMaxValueProbDistribution", "rlnClassDistribution", "rlnAccuracyRotations",
        "rlnAccuracyTranslations", "rlnAccuracyTranslationsAngst", "rlnEstimatedResolution",
        "rlnOverallFourierCompleteness", "rlnResolution", "rlnAngstromResolution",
        "rlnFourierShellCorrelation", "rlnGoldStandardFsc", "rlnSsnrMap", "rlnReferenceSigma2",
        "rlnReferenceTau2", "rlnSigma2Noise", "rlnSpectralOrientabilityContribution",
        "rlnCurrentResolution", "rlnPixelSize", "rlnTau2FudgeFactor", "rlnNormCorrectionAverage",
        "rlnSigmaOffsets", "rlnSigmaOffsetsAngst", "rlnLogLikelihood", "rlnAveragePmax",
        # schemes
        "rlnSchemeFloatVariableValue", "rlnSchemeFloatVariableResetValue",
    }
)


#: Labels RELION stores as integers (integral float text such as ``1.000000`` is read as int64).
INT_LABELS = frozenset(
    {
        "rlnOpticsGroup", "rlnClassNumber", "rlnGroupNumber", "rlnRandomSubset", "rlnImageSize",
        "rlnImageDimensionality", "rlnNrOfSignificantSamples", "rlnNrOfFrames", "rlnHelicalTubeID",
        "rlnCtfDataAreCtfPremultiplied", "rlnMicrographFrameNumber", "rlnPipeLineJobCounter",
        "rlnJobIsContinue", "rlnJobIsTomo", "rlnSchemeJobHasStarted", "rlnSchemeEdgeIsFork",
        "rlnSchemeBooleanVariableValue", "rlnSchemeBooleanVariableResetValue",
    }
)


def is_string_label(label: str) -> bool:
    """True for labels that always hold text (file names, job options, ...)."""
    return label in STRING_LABELS or label.endswith("Name") or label.endswith("NameNoDW")


def is_double_label(label: str) -> bool:
    """True for labels RELION stores as doubles."""
    return label in DOUBLE_LABELS


def is_int_label(label: str) -> bool:
    """True for labels RELION stores as integers or booleans."""
    return label in INT_LABELS
