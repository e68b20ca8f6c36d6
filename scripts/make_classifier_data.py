"""Generate collection-domain training text for the utterance classifier.

Writes ``tests/data/classifier_train_extra.jsonl`` (``{"text", "speaker", "labels"}`` per line) from hand-written
templates × vocabulary combinations. Nothing here is copied from ``tests/data/utterances_*.jsonl`` or the call
manifests: the templates were written for this script. Deterministic for a given ``--seed``.

    .venv/bin/python scripts/make_classifier_data.py --out tests/data/classifier_train_extra.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

# --------------------------------------------------------------------------- vocabulary

NAME = [
    "张",
    "王",
    "李",
    "刘",
    "陈",
    "杨",
    "黄",
    "赵",
    "吴",
    "周",
    "徐",
    "孙",
    "马",
    "朱",
    "胡",
    "郭",
    "何",
    "林",
    "高",
    "罗",
]
TITLE = ["先生", "女士", "小姐", "师傅", "老师"]
FULLNAME = [
    "张伟",
    "王芳",
    "李娜",
    "刘洋",
    "陈静",
    "杨磊",
    "黄勇",
    "赵丽",
    "吴强",
    "周杰",
    "徐敏",
    "孙涛",
    "马超",
    "朱琳",
    "胡军",
    "郭燕",
    "何鹏",
    "林晓",
    "高峰",
    "罗兰",
]
AMOUNT = ["三千", "五千", "八千二", "一万二", "两万", "四千五", "六百", "九千", "一万五", "三万", "两千三", "七千"]
DAY = ["今天", "明天", "今晚", "后天", "这周五", "月底前", "下午三点前", "今天下班前", "二十四小时内", "明天中午前"]
KIN = [
    "你老婆",
    "你老公",
    "你爸妈",
    "你父母",
    "你儿子",
    "你女儿",
    "你孩子",
    "你家里人",
    "你老母亲",
    "你媳妇",
    "你哥",
    "你妹妹",
    "你家老人",
]
THIRD = [
    "你领导",
    "你们老板",
    "你同事",
    "你们人事",
    "你朋友",
    "你邻居",
    "你们小区物业",
    "你通讯录里的人",
    "你紧急联系人",
    "你亲戚",
    "你们单位",
    "你们村委会",
    "你孩子的老师",
    "你室友",
    "你前妻",
]
THIRD_VOC = [
    "您是他同事吧",
    "您是他领导吗",
    "请问您是他邻居吗",
    "您是她朋友是吧",
    "您是他家属吗",
    "您好，是他们单位人事吗",
    "请问是他表哥吗",
    "您是她室友对吧",
    "请问您是他房东吗",
    "您是他的紧急联系人",
]
INSULT = [
    "废物",
    "垃圾",
    "贱人",
    "傻逼",
    "蠢货",
    "人渣",
    "败类",
    "无赖",
    "老赖",
    "穷鬼",
    "白眼狼",
    "窝囊废",
    "狗东西",
    "混蛋",
    "王八蛋",
    "脑残",
    "不要脸的东西",
    "畜生",
    "猪脑子",
    "臭不要脸的",
    "二百五",
    "下三滥",
    "死皮赖脸的",
]
AUTHORITY = [
    "法院",
    "公安局",
    "派出所",
    "检察院",
    "经侦大队",
    "中级人民法院",
    "执行局",
    "网警",
    "银保监会",
    "金融监管局",
    "律师事务所",
    "仲裁委",
]
ROLE = ["法官", "警官", "执行法官", "检察官", "民警", "律师", "书记员", "经侦警察", "调解员"]

# --------------------------------------------------------------------------- templates per class

THREAT = [
    "{day}不还，后果自负。",
    "{day}钱不到账，我们的人就去你家找你。",
    "你信不信我找人去你家门口堵你？",
    "我们已经派人去你家了，你自己看着办。",
    "你不还钱，小心你的腿。",
    "再不还钱，我让你在这个城市待不下去。",
    "你要是不还，我们会让你付出代价。",
    "{kin}每天几点出门我们都清楚，你最好配合点。",
    "你孩子在哪个学校上学我们都知道。",
    "你出门最好小心点，路上车多。",
    "不还钱的话，别怪我们不客气。",
    "再拖下去，我保证你会后悔的。",
    "我们有的是办法对付你这种人。",
    "今天不给钱，晚上就有人上门拜访你。",
    "你家住几楼几号我们都查到了，等着吧。",
    "你躲得了初一躲不了十五，早晚找到你。",
    "再不还我就天天打爆你的电话，让你睡不了觉。",
    "别逼我们动手，到时候谁都不好看。",
    "我们会让你全家都不得安宁。",
    "你要是敢不还，我弄死你。",
    "信不信我现在就带人过去砸了你的店？",
    "不还钱就等着给{kin}收尸吧。",
    "我们兄弟已经在你楼下了。",
    "钱不还，你就别想过安稳日子。",
    "{day}之前不把{amount}打过来，你自己掂量后果。",
    "再不还款，我们的人直接上门，到时候别怪我没提醒你。",
    "你要是不想你家人出事，就赶紧还钱。",
    "我给你最后一次机会，不然让你好看。",
    "我们会把你欠钱的事印成传单贴满你们小区。",
    "我们会在你家门口喷漆写上欠债还钱。",
    "你等着，我们会让你身败名裂。",
    "识相的赶紧还，不然有你受的。",
    "晚上走夜路的时候小心点。",
    "你不还钱，我们就去你单位闹，闹到你被开除为止。",
    "我们的外访人员随时可以去你老家找你父母。",
    "你要再不接电话，我就把你的照片P成遗照发群里。",
    "别以为换了号码就没事了，我们找得到你。",
    "你这条命值多少钱你自己想想。",
    "出了什么事别怪我们，是你自己不还钱的。",
    "我认识道上的人，你欠的钱他们会帮我要回来。",
]
ABUSE = [
    "你就是个{insult}。",
    "{insult}，欠钱不还还有脸接电话？",
    "你这种{insult}怎么还有脸活着？",
    "你个{insult}，赶紧还钱！",
    "欠钱不还的{insult}，真恶心。",
    "你脑子有病吧，{insult}。",
    "你妈没教过你欠债还钱吗？{insult}！",
    "你这种人活着就是浪费空气。",
    "真是个没皮没脸的东西。",
    "你怎么不去死啊？",
    "你一家子都是{insult}。",
    "跟你说话都嫌脏，{insult}。",
    "你算个什么东西，也敢跟我讲条件？",
    "穷成这样还借钱，{insult}一个。",
    "滚你妈的，{insult}。",
    "你是猪吗？这么简单都听不懂。",
    "我看你就是天生的{insult}命。",
    "{insult}，你爹妈生你有什么用。",
    "闭嘴吧你，{insult}！",
    "你这个骗子，欠钱装死的{insult}。",
    "你是不是傻，听不懂人话啊？",
    "没文化的{insult}，跟你说不清楚。",
    "你就是个臭要饭的。",
    "老不死的，欠钱还在这装可怜。",
    "你们外地人就是素质差，欠钱不还。",
    "一个大男人连这点钱都还不起，丢人现眼。",
]
IMPERSONATION = [
    "我是{authority}的，你涉嫌诈骗，现在要对你立案调查。",
    "这里是{authority}，你的欠款案件已经移交到我们这里了。",
    "我是{authority}的{role}，你{day}不还钱就要对你采取强制措施。",
    "我们是{authority}委托的，现在代表{authority}通知你。",
    "我是{role}，姓{name}，你的案子在我手上。",
    "你的逮捕令已经下来了，{day}不还就来抓你。",
    "我们已经向{authority}报案了，警察{day}就上门抓人。",
    "再不还钱就是恶意透支，要判刑坐牢的，这是法律规定。",
    "你这个属于诈骗罪，我们马上报警抓你。",
    "你已经被列为网上逃犯了，出门就会被抓。",
    "我是{authority}执行局的，现在冻结你名下所有银行卡。",
    "{authority}已经立案了，传票{day}送到你家。",
    "我是你们当地{authority}的，你欠款的事我们已经掌握了。",
    "我们是{authority}的工作人员，请你配合调查。",
    "不还钱会被拘留十五天，我们和{authority}是联网的。",
    "我这边是{authority}，你现在把钱转到安全账户上。",
    "我们催收部门就相当于{authority}，有执法权。",
    "我是银保监会的，专门处理你这种逾期不还的。",
    "你已经上了失信被执行人名单，马上要被司法拘留。",
    "你的征信已经被我们拉黑，这辈子都贷不了款，坐火车都不行。",
    "我是{authority}派来的，你现在必须马上还款。",
    "欠钱不还就是犯罪，我们直接让{authority}抓你。",
    "我是{role}{name}，你的案件编号我发短信给你。",
    "我们公司的律师已经向{authority}申请拘捕你了。",
]
DISCLOSURE = [
    "{third_voc}？他欠我们{amount}一直不还，麻烦您转告他。",
    "{third_voc}？她在我们平台逾期了，您帮忙催一下。",
    "{third_voc}？他借了钱不还，您能不能替他还一下？",
    "我刚给{third}打过电话了，告诉他们你欠钱的事。",
    "我们会联系{third}，让他们知道你欠钱不还。",
    "你不接电话，我只好打给{third}了，告诉他你欠了{amount}。",
    "你再不还，我就把你的欠款信息发给{third}。",
    "我已经在{third}的群里发了你的欠款记录。",
    "我会打电话给你通讯录里所有人，告诉他们你是老赖。",
    "我们刚联系了{kin}，把你欠款的情况都说了。",
    "你好，你是{fullname}的同事吧？他在我们这儿欠款逾期三个月了。",
    "麻烦您转告{fullname}，他在我们这欠的{amount}再不还就起诉了。",
    "请问你认识{fullname}吗？他欠了我们钱，电话一直打不通。",
    "我把你欠钱的事告诉{third}了，看你以后还怎么做人。",
    "我们会给你们单位发律师函，让全公司都知道你欠钱。",
    "你欠款的事情我们会通知{third}，让他们督促你还款。",
    "{kin}已经知道你在外面欠了{amount}了，我刚跟他说的。",
    "我们准备把你的欠款信息挂到你朋友圈和你们小区业主群里。",
    "您是他的紧急联系人，他欠款逾期了，您得帮他还。",
    "这个人欠我们{amount}，你作为他同事，麻烦提醒他一下。",
]
PRIVACY_TPL = [
    "你的身份证号是{id}，没错吧？",
    "借款人身份证{id}，我们这边都有记录。",
    "我念一下你的身份证号码，{id}。",
    "你绑定的银行卡号是{card}，扣款一直失败。",
    "你的卡号{card}，我们已经查到了。",
    "{kin}的手机号{phone}，我们也有。",
    "你同事的电话是{phone}，要不要我打过去问问？",
    "你家地址是{addr}，对吧？",
    "你住在{addr}，我们清清楚楚。",
    "你老婆身份证号{id}，我这边也登记了。",
    "你工作单位的电话{phone}，我刚查到的。",
    "{fullname}，身份证号{id}，手机{phone}，欠款{amount}。",
    "您的银行卡{card}，还款的时候别转错了。",
    "我跟您核对一下，您的身份证号码是{id}。",
    "借款人{fullname}的手机号是{phone}，住址{addr}。",
]
ADDR = [
    "朝阳区望京西路十八号三单元五零二",
    "浦东新区张杨路六百号七楼",
    "天河区体育西路一百二十三号",
    "江宁区双龙大道八号二栋",
    "雁塔区小寨东路九十号",
    "武侯区人民南路四段二十七号",
    "南山区科技园南区十二栋",
    "历下区泉城路一百八十号五零一室",
]
NEUTRAL_AGENT = [
    "您好，这里是{co}客服中心，请问是{name}{title}本人吗？",
    "您好，我是{co}的工作人员，工号{digits3}，来电是提醒您账单的还款事宜。",
    "您的账单已经逾期{ndays}天了，欠款{amount}元，请问什么时候方便处理？",
    "{name}{title}，您在我们平台的借款已经逾期，麻烦尽快安排还款。",
    "为了核实身份，请您报一下身份证后四位。",
    "请问您银行卡尾号是{last4}吗？",
    "您手机尾号{last4}对吧？我们核对一下。",
    "如果一直不还，我们可能会依法向法院提起诉讼，请您重视。",
    "逾期记录会上报征信，影响您以后贷款，建议尽快处理。",
    "您放心，我们不会上门，也不会联系您的家人和同事。",
    "我们只跟您本人沟通，不会把您的情况告诉任何第三方。",
    "您这个情况可以申请分期还款，我帮您提交一下。",
    "{day}方便先还一部分吗？比如{amount}。",
    "好的，那我们约定{day}还款，到时候我再跟您确认。",
    "您可以通过APP或者对公账户还款，不要转到个人账户。",
    "如果您有困难可以跟我说，我们可以一起想办法。",
    "欠款是民事纠纷，不存在坐牢的问题，但是需要您积极处理。",
    "请您不要相信任何要求转账到个人账户的电话。",
    "如果对账单有异议，可以拨打我们的客服热线反映。",
    "我们的通话会全程录音，请您知悉。",
    "请问他本人在吗？麻烦让他回个电话，谢谢。",
    "请问是{name}{title}吗？不是的话打扰了，不好意思。",
    "麻烦您转告他给我们回个电话，具体事情我们跟他本人说。",
    "打扰您了，我们找的是机主本人，别的不方便透露。",
    "您的减免申请已经审批通过了，减免{amount}元。",
    "还款后一般两个小时内到账，您可以在APP上查看。",
    "我们这边是依法合规催收，不会有任何威胁和骚扰。",
    "后续如果进入诉讼程序，法院会依法判决，我只是把流程告诉您。",
    "您的欠款我们会依法委托律师处理，届时会有正式通知。",
    "您也可以去银行柜台还款，记得备注您的姓名。",
    "对不起，刚才是我说话态度不好，向您道歉。",
    "那您先忙，我{day}再打给您。",
    "好的，感谢您的配合，祝您生活愉快。",
    "嗯，明白，我这边记录一下。",
    "稍等，我帮您查一下账单明细。",
    "这个我需要跟主管确认一下再回复您。",
    "按合同约定，逾期会产生罚息，具体金额APP里能看到。",
    "逾期超过九十天可能会影响您的征信记录，这是如实告知。",
    "我们不会在晚上九点以后给您打电话。",
    "您的个人信息我们严格保密，不会泄露给任何人。",
    "您说的投诉我已经记录了，工单号会短信发给您。",
    "您的还款日是每月{dnum}号，记得提前存好钱。",
    "我们公司的客服电话是四零零八二零八八二零。",
    "如果您认为我们催收方式不当，可以向监管部门投诉。",
    "我理解您的难处，但欠款总归是要还的。",
    "请您在{day}前登录APP确认还款计划。",
    "我们只是提醒，没有任何威胁您的意思。",
    "您欠款的事我们不会告诉您的家人。",
    "我们不会去您单位，您放心。",
    "法院的事情由法院依法决定，我们没有权力抓人。",
    "我们是催收公司，不是法院，也不是公安。",
    "请核实一下您的身份证后四位，谢谢。",
    "您的欠款本金{amount}元，利息已经帮您申请减免了。",
    "您别着急，有什么问题慢慢说。",
]
NEUTRAL_CUSTOMER = [
    "我最近手头紧，能不能宽限几天？",
    "我{day}就还，你们别再打了。",
    "好的，我知道了，谢谢。",
    "我已经还了，你们查一下。",
    "你们是哪个公司的？我要核实一下。",
    "我没钱，你们说怎么办吧。",
    "能不能分期？我一次还不上。",
    "你们不要打我家人的电话，我自己会处理。",
    "我要投诉你们，你工号多少？",
    "我现在在上班，不方便说话。",
    "利息怎么这么高？我不认这个数。",
    "嗯嗯，行，我晚点看一下APP。",
    "我失业了，真的没钱还。",
    "我下个月发工资一定还上。",
    "你刚才说的什么？信号不好。",
    "你们再这样我就报警了。",
    "我老公生病住院，这个月实在还不了。",
    "我能先还{amount}吗？",
    "你们这个催收太烦了，天天打。",
    "我不是他本人，你打错了。",
    "他不在，你有什么事？",
    "卡号尾号{last4}那张卡扣款了吗？",
    "好吧，那就这样。",
    "你说话客气点，我又不是不还。",
    "我真的很着急，求你们再给我点时间。",
    "你们这样做是违法的，我要去银保监会投诉。",
]
CUSTOMER_ABUSE = [
    "你妈的，天天打电话，烦不烦？",
    "滚，{insult}！",
    "你们这群{insult}，吸血鬼！",
    "操你妈的，老子没钱！",
    "你算什么东西，{insult}催收的。",
    "去你妈的，再打我就骂死你。",
    "你们这帮畜生，不得好死！",
    "神经病，别再给我打了。",
    "你个{insult}，有种你来啊！",
    "放贷的都是{insult}，全家死光。",
    "你脑子进水了吧？{insult}。",
    "傻逼催收，滚远点。",
    "你们就是一群土匪流氓。",
    "我去你大爷的，你再打试试！",
    "你们这些人渣，放高利贷的早晚遭报应。",
    "闭嘴吧你，{insult}。",
]
CO = ["某某金融", "平安普惠", "信用卡中心", "消费金融公司", "借呗合作机构", "小额贷款公司"]

# The 2025 standard's three categories (GB/T 45251—2025; issue 19), written for this script like the rest: other
# verbs and polite forms, and their lawful mirror images as hard negatives (credit reporting as it is, litigation
# through a court, official channels, free restructuring, advice against borrowing).
MISREPRESENTATION = [
    "你这笔欠款已经被认定为恶意拖欠，会记入全国失信名单。",
    "逾期满{ndays}天系统就会把你列入金融黑名单，全国的银行都查得到。",
    "不还钱就是诈骗，这是刑事案件，不是民事的。",
    "你这个征信以后就黑了，一辈子都贷不了款。",
    "你欠的钱{kin}是要负连带责任的，法律上跑不掉。",
    "再不还，你的社保和公积金都会被停掉。",
    "欠款不还，你孩子以后上学都会受影响的。",
    "按国家规定，逾期一天要罚{amount}的违约金。",
    "这是法定的罚息标准，一共{amount}，一分都少不了。",
    "你这种情况已经留下案底了，以后出国旅游都办不了签证。",
    "我们已经把你上报到行业共享的老赖名单里了。",
    "你名下的手机号马上会被运营商停机，这是联动惩戒。",
    "欠钱不还属于经济犯罪，性质很严重。",
    "现在的新规定，逾期的全部要上失信系统，高铁飞机都坐不了。",
    "你要负刑事责任的，别以为这只是欠点钱的事。",
    "这笔账现在滚到{amount}了，法律规定就是这么算的。",
    "你以后住酒店、开银行卡都会被系统拦下来。",
    "你单位要是知道你上了黑名单，肯定把你开除。",
]
INDUCED_BORROWING = [
    "你去网贷平台上借一笔，先把我们这个还了。",
    "信用卡还有额度吧，套现出来还给我们。",
    "你找个口子撸一笔，{day}把钱还上。",
    "借新还旧嘛，大家都是这么周转的。",
    "花呗借呗白条都开一下，凑够{amount}还进来。",
    "你让{kin}用他的名字贷一笔出来给你还款。",
    "我给你推荐个贷款APP，当天就下款，先还我们的。",
    "你把房子拿去抵押一下，钱不就有了。",
    "找个小贷公司先垫上，以后再慢慢还他们。",
    "你去银行申请个消费贷，拿来还我们这边。",
    "用信用卡取现{amount}，{day}转过来。",
    "你手机上那些借款软件都试一遍，总有一个能借到。",
    "不行就找人借点高息的，先把我们这个结了。",
    "我们有合作的垫资公司，帮你垫上，你再还他们。",
    "你把公积金贷出来还我们，利息很低的。",
    "去典当行把金首饰当了，先还一部分。",
]
IMPROPER_PAYMENT = [
    "你把钱转到我个人的银行卡上，我这边给你处理。",
    "还款直接扫我微信的收款码就行。",
    "要撤销起诉，你得先交{amount}的手续费。",
    "上门催收要收{amount}的外访费，这个你得出。",
    "申请减免要先交一笔服务费，不然批不下来。",
    "你转到我们主管的支付宝上，今天就能销账。",
    "交{amount}的保证金，我们就暂停催收。",
    "开结清证明要另外收工本费。",
    "你给我转点好处费，我帮你把罚息免了。",
    "延期还款要先交{amount}的展期费。",
    "钱别走APP了，打到这个私人账户更快。",
    "付一笔加急费，我帮你把征信记录消掉。",
    "你把现金交给我们上门的同事就行，不用走公司账户。",
    "想停诉讼就先交律师费{amount}，交了马上撤。",
    "我发个二维码给你，扫了就算还款了。",
    "协商分期要先交一笔协商费，按规定收的。",
]
NEUTRAL_STANDARD = [
    "逾期记录会按规定报送征信系统，结清后会更新状态，保留五年。",
    "如果协商不成，我们可能依法向法院起诉，最后以法院判决为准。",
    "请您只通过官方APP或者公司对公账户还款，不要转给任何个人。",
    "您可以申请延期或者分期，这个不收任何费用。",
    "我们不建议您去借网贷或者信用卡套现来还款，那样负担更重。",
    "罚息是按合同约定计算的，具体金额以账单为准。",
    "失信被执行人要由法院认定，不是我们公司能决定的。",
    "如果对金额有异议，您可以申请对账，也可以投诉。",
    "您可以先还一部分，剩下的我们按流程申请分期。",
    "还款请认准公司全称的对公账户，有问题拨打客服电话核实。",
    "这是民事纠纷，不涉及刑事责任，我们希望协商解决。",
    "结清以后我们会给您开结清证明，不收费。",
    "如果有人让您转到私人账户，那不是我们公司的要求，请报警。",
    "您的还款金额就是账单上的数字，没有其他费用。",
    "减免方案经过审批就可以执行，不需要交任何押金。",
    "您和家人商量一下，看看{day}能还多少，我们再登记。",
]

CN_DIGIT = "零一二三四五六七八九"


def chinese_digits(s: str, rng: random.Random) -> str:
    """Digits → Chinese digits as spoken (1 often 幺), grouped with spaces or commas at random."""
    one = "幺" if rng.random() < 0.5 else "一"
    out = "".join(one if c == "1" else (CN_DIGIT[int(c)] if c.isdigit() else ("叉" if c == "X" else c)) for c in s)
    return out


def group(s: str, sizes: list[int], sep: str) -> str:
    parts, i = [], 0
    for n in sizes:
        parts.append(s[i : i + n])
        i += n
    if i < len(s):
        parts.append(s[i:])
    return sep.join(p for p in parts if p)


def rand_id(rng: random.Random) -> str:
    area = rng.choice(["110105", "310115", "440106", "320115", "610113", "510107", "430104", "350203", "370102"])
    y, m, d = rng.randint(1965, 2003), rng.randint(1, 12), rng.randint(1, 28)
    body = f"{area}{y}{m:02d}{d:02d}{rng.randint(0, 999):03d}"
    w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(a) * b for a, b in zip(body, w, strict=True)) % 11]
    return body + check


def rand_card(rng: random.Random) -> str:
    prefix = rng.choice(["621483", "622202", "622848", "621700", "622588", "621226", "436742"])
    return prefix + "".join(str(rng.randint(0, 9)) for _ in range(10))


def rand_phone(rng: random.Random) -> str:
    return (
        rng.choice(["13", "15", "18", "17", "19"])
        + str(rng.randint(0, 9))
        + "".join(str(rng.randint(0, 9)) for _ in range(8))
    )


def spell(num: str, kind: str, rng: random.Random) -> str:
    sizes = {"id": [6, 4, 4, 4], "card": [4, 4, 4, 4], "phone": [3, 4, 4]}[kind]
    r = rng.random()
    if r < 0.25:
        return group(num, sizes, rng.choice([" ", "", "，"]))  # Arabic digits
    return group(chinese_digits(num, rng), sizes, rng.choice([" ", "", "，", "、"]))


def fill(tpl: str, rng: random.Random) -> str:
    vals = {
        "name": rng.choice(NAME),
        "title": rng.choice(TITLE),
        "fullname": rng.choice(FULLNAME),
        "amount": rng.choice(AMOUNT),
        "day": rng.choice(DAY),
        "kin": rng.choice(KIN),
        "third": rng.choice(THIRD),
        "third_voc": rng.choice(THIRD_VOC),
        "insult": rng.choice(INSULT),
        "authority": rng.choice(AUTHORITY),
        "role": rng.choice(ROLE),
        "co": rng.choice(CO),
        "addr": rng.choice(ADDR),
        "digits3": chinese_digits(f"{rng.randint(0, 999):03d}", rng),
        "last4": chinese_digits(f"{rng.randint(0, 9999):04d}", rng)
        if rng.random() < 0.6
        else f"{rng.randint(0, 9999):04d}",
        "ndays": rng.choice(["三", "十五", "三十", "四十五", "九十", "七"]),
        "dnum": rng.choice(["五", "十", "十五", "二十", "二十八"]),
        "id": spell(rand_id(rng), "id", rng),
        "card": spell(rand_card(rng), "card", rng),
        "phone": spell(rand_phone(rng), "phone", rng),
    }
    return tpl.format(**vals)


PREFIX = ["", "", "", "我跟你说，", "喂，", "听好了，", "那个，", "我告诉你，", "嗯，", "说实话，", "你听着，"]
PREFIX_NEUTRAL = ["", "", "", "嗯，", "好的，", "那个，", "您好，", "是这样的，"]


def rows(rng: random.Random, per_template: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def add(tpls: list[str], speaker: str, labels: list[str], prefixes: list[str], k: int = per_template) -> None:
        for tpl in tpls:
            seen = set()
            for _ in range(k):
                t = rng.choice(prefixes) + fill(tpl, rng)
                if t in seen:
                    continue
                seen.add(t)
                lab = list(labels)
                # a privacy line that reads out a relative's/colleague's details also discloses to nobody: keep as is
                out.append({"text": t, "speaker": speaker, "labels": lab})

    add(THREAT, "agent", ["threat"], PREFIX)
    add(ABUSE, "agent", ["abuse"], PREFIX)
    add(IMPERSONATION, "agent", ["impersonation"], PREFIX)
    add(DISCLOSURE, "agent", ["third_party_disclosure"], PREFIX_NEUTRAL)
    add(PRIVACY_TPL, "agent", ["privacy_leak"], PREFIX_NEUTRAL, k=per_template * 2)
    add(NEUTRAL_AGENT, "agent", [], PREFIX_NEUTRAL, k=per_template * 2)
    add(NEUTRAL_CUSTOMER, "customer", [], PREFIX_NEUTRAL, k=per_template)
    add(CUSTOMER_ABUSE, "customer", ["customer_abuse"], [""] + PREFIX)
    # customer saying insults is customer_abuse, not abuse; agent reading customer lines is neutral-ish: skip
    # combinations: threat + disclosure, privacy + threat
    for _ in range(per_template * 6):
        t = fill(rng.choice(PRIVACY_TPL), rng).rstrip("。？?") + "，" + fill(rng.choice(THREAT), rng)
        out.append({"text": t, "speaker": "agent", "labels": ["privacy_leak", "threat"]})
        t = fill(rng.choice(THREAT), rng).rstrip("。") + "，" + fill(rng.choice(DISCLOSURE[3:10]), rng)
        out.append({"text": t, "speaker": "agent", "labels": ["third_party_disclosure", "threat"]})
        t = fill(rng.choice(ABUSE), rng).rstrip("。") + "，" + fill(rng.choice(THREAT), rng)
        out.append({"text": t, "speaker": "agent", "labels": ["abuse", "threat"]})
    # after the rest, so the lines above stay the same for a given seed
    add(MISREPRESENTATION, "agent", ["misrepresentation"], PREFIX)
    add(INDUCED_BORROWING, "agent", ["induced_borrowing"], PREFIX)
    add(IMPROPER_PAYMENT, "agent", ["improper_payment"], PREFIX)
    add(NEUTRAL_STANDARD, "agent", [], PREFIX_NEUTRAL, k=per_template * 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("tests/data/classifier_train_extra.jsonl"))
    ap.add_argument("--per-template", type=int, default=12)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    data = rows(rng, args.per_template)
    rng.shuffle(data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for r in data:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(data)} rows to {args.out}")


if __name__ == "__main__":
    main()
