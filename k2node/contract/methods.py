"""The namespace RPC: `POST /namespace-wrapper` with `{"args": [METHOD, ...], "taskId",
"secret"}`. The task SDK sends these names and the node serves them; both take them from here.
"""

from __future__ import annotations

from enum import StrEnum

NAMESPACE_PATH = "/namespace-wrapper"
# Largest JSON body accepted on the namespace RPC and by a task's own routes.
MAX_RPC_BODY = 8 * 1024 * 1024


class Method(StrEnum):
    # reads of K2
    GET_CURRENT_SLOT = "getCurrentSlot"
    GET_ROUND = "getRound"
    GET_AVERAGE_SLOT_TIME = "getAverageSlotTime"
    GET_TASK_STATE = "getTaskState"
    GET_TASK_SUBMISSION_INFO = "getTaskSubmissionInfo"
    GET_TASK_DISTRIBUTION_INFO = "getTaskDistributionInfo"
    GET_DISTRIBUTION_LIST = "getDistributionList"
    GET_NODES = "getNodes"
    GET_PEERS = "getPeers"  # k2node: the task's other nodes, as namespace.peers() lists them
    GET_PROGRAM_ACCOUNTS = "getProgramAccounts"
    GET_TASK_STATE_BY_ID = "getTaskStateById"
    # actions the node signs with its staking key
    CHECK_SUBMISSION_AND_UPDATE_ROUND = "checkSubmissionAndUpdateRound"
    AUDIT_SUBMISSION = "auditSubmission"
    DISTRIBUTION_LIST_AUDIT_SUBMISSION = "distributionListAuditSubmission"
    UPLOAD_DISTRIBUTION_LIST = "uploadDistributionList"
    DISTRIBUTION_LIST_SUBMISSION_ON_CHAIN = "distributionListSubmissionOnChain"
    PAYLOAD_TRIGGER = "payloadTrigger"  # sic: the payout
    STAKE_ON_CHAIN = "stakeOnChain"
    CLAIM_REWARD = "claimReward"
    SEND_AND_CONFIRM_TRANSACTION_WRAPPER = "sendAndConfirmTransactionWrapper"  # task-built
    SEND_TRANSACTION = "sendTransaction"  # a transfer from the operator's main wallet
    # keys and signing
    GET_SUBMITTER_ACCOUNT = "getSubmitterAccount"
    SIGN_DATA = "signData"
    VERIFY_SIGNED_DATA = "verifySignedData"
    # the node and the task's folder
    GET_TASK_LEVEL_DB_PATH = "getTaskLevelDBPath"
    GET_BASE_PATH = "getBasePath"
    GET_RPC_URL = "getRpcUrl"
    GET_TASK_NODE_VERSION = "getTaskNodeVersion"
    LOGGER = "logger"
    DEFAULT_TASK_SETUP = "defaultTaskSetup"
    FS = "fs"
    FS_STAKING = "fsStaking"
    FS_READ_STREAM = "fsReadStream"
    FS_WRITE_STREAM = "fsWriteStream"
    # IPFS (k2node extensions; bytes travel base64-encoded)
    IPFS_UPLOAD = "ipfsUpload"
    IPFS_UPLOAD_FILE = "ipfsUploadFile"
    IPFS_GET = "ipfsGet"


# Methods that change K2's state.
CHAIN_ACTIONS = frozenset(
    {
        Method.CHECK_SUBMISSION_AND_UPDATE_ROUND,
        Method.AUDIT_SUBMISSION,
        Method.DISTRIBUTION_LIST_AUDIT_SUBMISSION,
        Method.UPLOAD_DISTRIBUTION_LIST,
        Method.DISTRIBUTION_LIST_SUBMISSION_ON_CHAIN,
        Method.PAYLOAD_TRIGGER,
        Method.STAKE_ON_CHAIN,
        Method.CLAIM_REWARD,
        Method.SEND_AND_CONFIRM_TRANSACTION_WRAPPER,
        Method.SEND_TRANSACTION,
    }
)
# Methods that publish content on IPFS.
PUBLISHES = frozenset({Method.IPFS_UPLOAD, Method.IPFS_UPLOAD_FILE})
