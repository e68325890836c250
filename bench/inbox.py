"""Agent inbox at scale: server-side render time of the inbox list and a conversation page with 50,000 conversations
and 1,000,000 messages in PostgreSQL, and the number of SQL queries per page at several page sizes.

    .venv/bin/python bench/inbox.py [--database-url postgres://.../switchboard_bench_inbox] [--reseed]
                                    [--conversations 50000] [--messages 1000000] [--contacts 40000]
                                    [--requests 200] [--rounds 3] [--search refund] [--seed-only] [--no-explain]

1. Seeding (skipped when the database already holds a seed of the same shape; --reseed forces it). Its own
   database (default `switchboard_bench_inbox`, created and migrated when missing). Queues, agents and channel
   accounts through the ORM: the demo's 12 language queues + the fallback, 3 agents per queue (`agent-<lang>-<n>`)
   and a manager (`bench-manager`); 2 web chat, 3 e-mail, 1 Telegram and 1 X channel accounts (rows only).
   Everything else with PostgreSQL COPY, with the loaded tables' secondary indexes and foreign keys dropped first and
   rebuilt (and so checked) afterwards, all in one transaction: contacts with 1-3 identities, conversations over the
   queues (85% resolved; open / pending / snoozed, priorities, assignees, waiting_since as the intake sets them),
   messages (~20 per conversation, log-normal, a few with hundreds; in / out / note) with generated support texts in
   14 languages and created_at over a year, an OutboundDelivery per outbound message. Then VACUUM ANALYZE.
2. Measuring, in this process with django.test.Client (middleware, session, queries, template: everything but the
   network) after a warm-up, as an agent of one language queue (`agent-en-0`, the largest queue) and as the manager:
   the inbox list unfiltered, filtered by queue, by status, a search, page 2; the conversation page of random
   conversations and of the largest one. p50 / p95 / p99 over --requests requests per page and round; the table shows
   the median over --rounds rounds and the min-max of p95. Queries per page at page sizes 25 / 50 / 100
   (SWITCHBOARD_INBOX_PAGE_SIZE for the list, SWITCHBOARD_TIMELINE_PAGE_SIZE for a conversation), and
   EXPLAIN (ANALYZE, BUFFERS) of each page's slowest query. Exits non-zero when a page answers other than 200.

Connections as in a web process: borrowed from the psycopg pool (DB_POOL=1, inbox/asgi.py sets it); DB_POOL=0 in
the environment measures a new connection per request instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import html
import json
import math
import os
import random
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "switchboard_bench_inbox"
SEED_VERSION = 1  # bump when the shape of the generated data changes: an older seed is then redone
PAGE_SIZES = (25, 50, 100)
AGENT = "agent-en-0"
MANAGER = "bench-manager"
PASSWORD = "bench-password-1"


def log(message: str) -> None:
    print(f"[inbox] {message}", file=sys.stderr, flush=True)


# --- Progress bar ----------------------------------------------------------------------------------------------
class Progress:
    """rows done / total, rate and ETA on one stderr line (a line every 5 s when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, unit: str = "rows") -> None:
        self.label, self.total, self.done, self.unit = label, total, 0, unit
        self.started = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= (0.2 if self.tty else 5.0):
            self.last = now
            self._draw(now, end="")

    def close(self) -> float:
        now = time.perf_counter()
        self._draw(now, end="\n")
        return now - self.started

    def _draw(self, now: float, end: str) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        share = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate and end == "" else 0.0
        filled = int(share * 30)
        bar = "#" * filled + "-" * (30 - filled)
        tail = f"ETA {eta:5.0f} s" if end == "" else f"{elapsed:6.1f} s"
        counts = f"{self.done:>9,}/{self.total:,} {share:4.0%}"
        line = f"[inbox] {self.label:<13} [{bar}] {counts} {rate:>9,.1f} {self.unit}/s {tail}"
        if self.tty:
            print("\r" + line, end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


# --- Generated texts -------------------------------------------------------------------------------------------
# Short customer-support sentences written for this benchmark (not taken from any data set). {o}: an order number,
# {n}: a small number, {name}: the contact's first name. Fallback-queue customers write Italian or Polish.
TEXTS: dict[str, dict[str, list[str]]] = {
    "en": {
        "in": [
            "Hi, I ordered a blender last week and it still hasn't arrived. Order #{o}.",
            "Hello, I was charged twice for the same invoice. Can you check?",
            "The app keeps logging me out every few minutes since the last update.",
            "Can I change the delivery address for order {o}? I moved last month.",
            "I never received the confirmation email after signing up.",
            "My package says delivered but there is nothing at my door.",
            "How do I cancel my subscription? I can't find the button anywhere.",
            "The discount code SPRING{n} doesn't work at checkout.",
            "Thanks for the quick answer, that solved it!",
            "Still waiting for a reply on this, it's been {n} days.",
            "Could you send me a copy of the invoice for my company's accounting?",
            "The item arrived damaged, the box was completely crushed. Photos attached.",
            "Is there a way to talk to a human? The chatbot didn't help.",
            "I'd like a refund please, the size is wrong.",
            "Does the warranty cover a broken hinge? It's only {n} months old.",
            "Where can I download the manual for the model I bought?",
            "I entered the wrong card number and now my account is locked.",
            "Ok, I'll wait. Please keep me posted.",
        ],
        "out": [
            "Hi {name}, thanks for reaching out! Let me look into this for you.",
            "I've checked order {o}: it left our warehouse on Monday and should arrive within {n} business days.",
            "I'm sorry about the double charge. I've refunded the duplicate payment; it can take 3-5 days to show up.",
            "I've sent the document again to the email address on your account.",
            "Could you please send me a photo of the label on the package?",
            "Your subscription has been cancelled; you keep access until the end of the billing period.",
            "I've updated the delivery address. You'll get a new tracking link shortly.",
            "Is there anything else I can help you with today?",
            "Thanks for your patience!",
            "I've unlocked your account, you can sign in again now.",
        ],
        "first": ["James", "Emily", "Michael", "Sarah", "David", "Olivia", "Daniel", "Grace"],
        "last": ["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clarke", "Walker", "Hughes"],
    },
    "es": {
        "in": [
            "Hola, hice un pedido hace una semana y todavía no ha llegado. Pedido n.º {o}.",
            "Me han cobrado dos veces la misma factura, ¿pueden revisarlo?",
            "La aplicación se cierra sola cada vez que intento pagar.",
            "¿Puedo cambiar la dirección de entrega del pedido {o}?",
            "No he recibido el correo de confirmación.",
            "El paquete aparece como entregado pero no hay nada en mi puerta.",
            "Quiero cancelar mi suscripción, no encuentro la opción.",
            "El código de descuento no funciona al pagar.",
            "Gracias por la rápida respuesta, ¡ya está solucionado!",
            "Sigo esperando una respuesta, ya han pasado {n} días.",
            "El producto llegó roto, la caja estaba aplastada.",
            "Quisiera un reembolso, la talla no es la correcta.",
        ],
        "out": [
            "Hola {name}, gracias por escribirnos. Lo reviso ahora mismo.",
            "He revisado el pedido {o}: salió del almacén el lunes y llegará en {n} días hábiles.",
            "Disculpe las molestias. Hemos devuelto el cobro duplicado; puede tardar de 3 a 5 días.",
            "¿Podría enviarnos una foto de la etiqueta del paquete?",
            "Su suscripción ha sido cancelada.",
            "¿Hay algo más en lo que pueda ayudarle?",
        ],
        "first": ["Lucía", "Mateo", "Sofía", "Javier", "Carmen", "Diego"],
        "last": ["García", "Martínez", "López", "Sánchez", "Romero", "Torres"],
    },
    "zh": {
        "in": [
            "你好，我上周下的订单到现在还没收到，订单号 {o}。",
            "同一张发票被扣了两次款，请帮我查一下。",
            "应用每次付款的时候都会闪退。",
            "可以修改订单 {o} 的收货地址吗？",
            "我没有收到注册确认邮件。",
            "物流显示已签收，但我没有收到包裹。",
            "我想取消订阅，找不到取消的按钮。",
            "优惠码在结账时无法使用。",
            "谢谢你们的快速回复，问题已经解决了！",
            "商品到货时已经损坏了，盒子被压扁了。",
            "我想申请退款，尺码不合适。",
        ],
        "out": [
            "{name}您好，感谢您的联系，我马上为您查询。",
            "订单 {o} 已于周一出库，预计 {n} 个工作日内送达。",
            "很抱歉给您带来不便，重复扣款已退回，3-5 个工作日到账。",
            "麻烦您拍一张包裹标签的照片发给我们。",
            "请问还有其他可以帮您的吗？",
        ],
        "first": ["伟", "芳", "娜", "磊", "静", "强"],
        "last": ["王", "李", "张", "刘", "陈", "杨"],
    },
    "ru": {
        "in": [
            "Здравствуйте, я оформил заказ неделю назад, а он до сих пор не пришёл. Номер заказа {o}.",
            "С меня дважды списали деньги за один и тот же счёт.",
            "Приложение вылетает каждый раз, когда я пытаюсь оплатить.",
            "Можно изменить адрес доставки для заказа {o}?",
            "Я не получил письмо с подтверждением регистрации.",
            "Посылка отмечена как доставленная, но её нет.",
            "Как отменить подписку? Не могу найти кнопку.",
            "Промокод не работает при оформлении заказа.",
            "Спасибо за быстрый ответ, всё заработало!",
            "Товар пришёл повреждённым, коробка была смята.",
            "Хочу вернуть деньги, размер не подошёл.",
        ],
        "out": [
            "Здравствуйте, {name}! Спасибо за обращение, сейчас проверю.",
            "Заказ {o} покинул склад в понедельник и прибудет в течение {n} рабочих дней.",
            "Приносим извинения, двойное списание возвращено, деньги поступят в течение 3–5 дней.",
            "Пришлите, пожалуйста, фото этикетки на посылке.",
            "Могу ли я ещё чем-нибудь помочь?",
        ],
        "first": ["Алексей", "Мария", "Дмитрий", "Анна", "Сергей", "Ольга"],
        "last": ["Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Морозова"],
    },
    "de": {
        "in": [
            "Hallo, ich habe vor einer Woche bestellt und die Lieferung ist immer noch nicht da. Bestellnummer {o}.",
            "Mir wurde dieselbe Rechnung zweimal abgebucht.",
            "Die App stürzt jedes Mal ab, wenn ich bezahlen möchte.",
            "Kann ich die Lieferadresse für Bestellung {o} noch ändern?",
            "Ich habe keine Bestätigungs-E-Mail bekommen.",
            "Das Paket wird als zugestellt angezeigt, ist aber nicht angekommen.",
            "Wie kann ich mein Abo kündigen?",
            "Der Gutscheincode funktioniert an der Kasse nicht.",
            "Vielen Dank für die schnelle Hilfe!",
            "Die Ware kam beschädigt an, der Karton war völlig zerdrückt.",
            "Ich möchte bitte eine Rückerstattung, die Größe passt nicht.",
        ],
        "out": [
            "Hallo {name}, danke für Ihre Nachricht! Ich schaue mir das gleich an.",
            "Bestellung {o} hat unser Lager am Montag verlassen und kommt in {n} Werktagen an.",
            "Entschuldigen Sie bitte. Die doppelte Abbuchung wurde erstattet.",
            "Könnten Sie uns ein Foto vom Paketetikett schicken?",
            "Kann ich sonst noch etwas für Sie tun?",
        ],
        "first": ["Lukas", "Anna", "Jonas", "Lea", "Felix", "Mia"],
        "last": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker"],
    },
    "fr": {
        "in": [
            "Bonjour, j'ai passé commande il y a une semaine et je n'ai toujours rien reçu. Commande n° {o}.",
            "J'ai été débité deux fois pour la même facture.",
            "L'application plante à chaque fois que j'essaie de payer.",
            "Est-il possible de modifier l'adresse de livraison de la commande {o} ?",
            "Je n'ai pas reçu l'e-mail de confirmation.",
            "Le colis est indiqué comme livré mais je ne l'ai pas reçu.",
            "Comment résilier mon abonnement ?",
            "Le code promo ne fonctionne pas lors du paiement.",
            "Merci pour votre réponse rapide, c'est réglé !",
            "L'article est arrivé abîmé, le carton était écrasé.",
            "Je voudrais être remboursé, la taille ne convient pas.",
        ],
        "out": [
            "Bonjour {name}, merci de nous avoir contactés. Je regarde cela tout de suite.",
            "La commande {o} a quitté notre entrepôt lundi et arrivera sous {n} jours ouvrés.",
            "Toutes nos excuses, le double prélèvement a été remboursé.",
            "Pourriez-vous nous envoyer une photo de l'étiquette du colis ?",
            "Puis-je vous aider pour autre chose ?",
        ],
        "first": ["Camille", "Louis", "Chloé", "Hugo", "Manon", "Jules"],
        "last": ["Martin", "Bernard", "Dubois", "Durand", "Lefebvre", "Moreau"],
    },
    "pt": {
        "in": [
            "Olá, fiz uma encomenda há uma semana e ainda não chegou. Pedido nº {o}.",
            "Fui cobrado duas vezes pela mesma fatura.",
            "O aplicativo fecha sozinho toda vez que tento pagar.",
            "Posso alterar o endereço de entrega do pedido {o}?",
            "Não recebi o e-mail de confirmação.",
            "O pacote aparece como entregue, mas não recebi nada.",
            "Como cancelo minha assinatura?",
            "O cupom de desconto não funciona no checkout.",
            "Obrigado pela resposta rápida, resolvido!",
            "O produto chegou danificado, a caixa estava amassada.",
            "Gostaria de um reembolso, o tamanho está errado.",
        ],
        "out": [
            "Olá {name}, obrigado pelo contato! Vou verificar agora mesmo.",
            "O pedido {o} saiu do armazém na segunda-feira e chega em {n} dias úteis.",
            "Pedimos desculpa, a cobrança duplicada foi estornada.",
            "Pode nos enviar uma foto da etiqueta do pacote?",
            "Posso ajudar em mais alguma coisa?",
        ],
        "first": ["João", "Ana", "Pedro", "Beatriz", "Rafael", "Mariana"],
        "last": ["Silva", "Santos", "Oliveira", "Souza", "Costa", "Ferreira"],
    },
    "tr": {
        "in": [
            "Merhaba, bir hafta önce sipariş verdim ama hâlâ gelmedi. Sipariş no {o}.",
            "Aynı fatura için iki kez ücret alındı.",
            "Uygulama ödeme yapmaya çalıştığımda kapanıyor.",
            "{o} numaralı siparişin teslimat adresini değiştirebilir miyim?",
            "Onay e-postası gelmedi.",
            "Kargo teslim edildi görünüyor ama elime ulaşmadı.",
            "Aboneliğimi nasıl iptal edebilirim?",
            "İndirim kodu ödeme sırasında çalışmıyor.",
            "Hızlı cevabınız için teşekkürler, sorun çözüldü!",
            "Ürün hasarlı geldi, kutu ezilmişti.",
            "İade istiyorum, beden uymadı.",
        ],
        "out": [
            "Merhaba {name}, bize yazdığınız için teşekkürler. Hemen kontrol ediyorum.",
            "{o} numaralı sipariş pazartesi depodan çıktı, {n} iş günü içinde teslim edilecek.",
            "Yaşanan sorun için özür dileriz, mükerrer ödeme iade edildi.",
            "Kargo etiketinin fotoğrafını gönderebilir misiniz?",
            "Başka yardımcı olabileceğim bir konu var mı?",
        ],
        "first": ["Mehmet", "Ayşe", "Mustafa", "Fatma", "Emre", "Zeynep"],
        "last": ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Aydın"],
    },
    "ar": {
        "in": [
            "مرحبا، طلبت منتجا قبل أسبوع ولم يصل حتى الآن. رقم الطلب {o}.",
            "تم خصم المبلغ مرتين لنفس الفاتورة.",
            "التطبيق يتوقف كلما حاولت الدفع.",
            "هل يمكنني تغيير عنوان التوصيل للطلب {o}؟",
            "لم تصلني رسالة التأكيد على البريد الإلكتروني.",
            "الشحنة تظهر أنها سُلّمت لكنني لم أستلمها.",
            "كيف ألغي اشتراكي؟",
            "رمز الخصم لا يعمل عند الدفع.",
            "شكرا على الرد السريع، تم حل المشكلة!",
            "وصل المنتج تالفا وكانت العلبة مهشمة.",
            "أريد استرداد المبلغ، المقاس غير مناسب.",
        ],
        "out": [
            "مرحبا {name}، شكرا لتواصلك معنا. سأتحقق من الأمر الآن.",
            "غادر الطلب {o} المستودع يوم الاثنين وسيصل خلال {n} أيام عمل.",
            "نعتذر عن الإزعاج، تم رد المبلغ المخصوم مرتين.",
            "هل يمكنك إرسال صورة لملصق الشحنة؟",
            "هل هناك أي شيء آخر يمكنني مساعدتك فيه؟",
        ],
        "first": ["محمد", "فاطمة", "أحمد", "مريم", "علي", "ليلى"],
        "last": ["الأحمد", "الحسن", "السعيد", "العلي", "الخطيب", "النجار"],
    },
    "ja": {
        "in": [
            "こんにちは。1週間前に注文した商品がまだ届きません。注文番号は{o}です。",
            "同じ請求書で2回請求されています。",
            "支払いをしようとするとアプリが落ちます。",
            "注文{o}の配送先住所を変更できますか？",
            "登録確認のメールが届いていません。",
            "配達済みになっていますが、荷物が届いていません。",
            "サブスクリプションの解約方法を教えてください。",
            "クーポンコードが使えません。",
            "早速のご対応ありがとうございます。解決しました！",
            "商品が破損した状態で届きました。箱が潰れていました。",
            "サイズが合わないので返金をお願いします。",
        ],
        "out": [
            "{name}様、お問い合わせありがとうございます。すぐに確認いたします。",
            "ご注文{o}は月曜日に出荷済みで、{n}営業日以内にお届け予定です。",
            "ご迷惑をおかけして申し訳ございません。二重請求分は返金いたしました。",
            "荷物のラベルの写真をお送りいただけますか？",
            "他にご不明な点はございますか？",
        ],
        "first": ["翔太", "さくら", "健", "陽菜", "大輔", "美咲"],
        "last": ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺"],
    },
    "ko": {
        "in": [
            "안녕하세요, 일주일 전에 주문했는데 아직 도착하지 않았어요. 주문번호 {o}입니다.",
            "같은 청구서로 두 번 결제되었습니다.",
            "결제하려고 하면 앱이 계속 종료돼요.",
            "주문 {o}의 배송지를 변경할 수 있나요?",
            "가입 확인 이메일을 받지 못했습니다.",
            "배송 완료로 나오는데 택배를 받지 못했어요.",
            "구독을 해지하려면 어떻게 해야 하나요?",
            "할인 코드가 결제 시 적용되지 않아요.",
            "빠른 답변 감사합니다, 해결됐어요!",
            "상품이 파손된 채로 도착했어요. 상자가 찌그러져 있었습니다.",
            "사이즈가 맞지 않아 환불받고 싶어요.",
        ],
        "out": [
            "{name}님, 문의 주셔서 감사합니다. 바로 확인해 드리겠습니다.",
            "주문 {o}은 월요일에 출고되었으며 {n}영업일 이내에 도착할 예정입니다.",
            "불편을 드려 죄송합니다. 중복 결제 금액은 환불 처리되었습니다.",
            "택배 라벨 사진을 보내 주실 수 있을까요?",
            "더 도와드릴 일이 있을까요?",
        ],
        "first": ["민준", "서연", "지훈", "하은", "현우", "지민"],
        "last": ["김", "이", "박", "최", "정", "강"],
    },
    "vi": {
        "in": [
            "Xin chào, tôi đặt hàng từ tuần trước mà vẫn chưa nhận được. Mã đơn hàng {o}.",
            "Tôi bị trừ tiền hai lần cho cùng một hóa đơn.",
            "Ứng dụng bị thoát mỗi khi tôi thanh toán.",
            "Tôi có thể đổi địa chỉ giao hàng cho đơn {o} không?",
            "Tôi không nhận được email xác nhận.",
            "Đơn hàng báo đã giao nhưng tôi chưa nhận được.",
            "Làm sao để hủy gói đăng ký?",
            "Mã giảm giá không dùng được khi thanh toán.",
            "Cảm ơn vì đã trả lời nhanh, vấn đề đã được giải quyết!",
            "Sản phẩm bị hỏng khi đến nơi, hộp bị móp.",
            "Tôi muốn được hoàn tiền vì sai kích cỡ.",
        ],
        "out": [
            "Chào {name}, cảm ơn bạn đã liên hệ. Mình kiểm tra ngay nhé.",
            "Đơn {o} đã rời kho vào thứ Hai và sẽ đến trong {n} ngày làm việc.",
            "Rất xin lỗi vì sự bất tiện, khoản trừ tiền trùng đã được hoàn lại.",
            "Bạn có thể gửi ảnh nhãn kiện hàng giúp mình không?",
            "Mình có thể giúp gì thêm cho bạn không?",
        ],
        "first": ["Minh", "Lan", "Huy", "Thảo", "Nam", "Linh"],
        "last": ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ"],
    },
    "it": {
        "in": [
            "Buongiorno, ho effettuato un ordine una settimana fa e non è ancora arrivato. Ordine n. {o}.",
            "Mi è stata addebitata due volte la stessa fattura.",
            "L'app si chiude ogni volta che provo a pagare.",
            "Il pacco risulta consegnato ma non l'ho ricevuto.",
            "Vorrei un rimborso, la taglia è sbagliata.",
            "Grazie per la risposta veloce!",
        ],
        "out": [
            "Buongiorno {name}, grazie per averci scritto. Controllo subito.",
            "L'ordine {o} è partito lunedì e arriverà entro {n} giorni lavorativi.",
            "C'è altro con cui posso aiutarla?",
        ],
        "first": ["Giulia", "Marco", "Francesca", "Luca"],
        "last": ["Rossi", "Russo", "Ferrari", "Esposito"],
    },
    "pl": {
        "in": [
            "Dzień dobry, zamówiłem tydzień temu i paczka nadal nie dotarła. Zamówienie nr {o}.",
            "Zostałem obciążony dwa razy za tę samą fakturę.",
            "Aplikacja zamyka się za każdym razem, gdy próbuję zapłacić.",
            "Paczka ma status doręczonej, ale jej nie otrzymałem.",
            "Chciałbym zwrot pieniędzy, rozmiar jest zły.",
            "Dziękuję za szybką odpowiedź!",
        ],
        "out": [
            "Dzień dobry {name}, dziękujemy za wiadomość. Zaraz to sprawdzę.",
            "Zamówienie {o} opuściło magazyn w poniedziałek i dotrze w ciągu {n} dni roboczych.",
            "Czy mogę jeszcze w czymś pomóc?",
        ],
        "first": ["Jakub", "Zofia", "Kacper", "Julia"],
        "last": ["Nowak", "Kowalski", "Wiśniewska", "Wójcik"],
    },
}
NOTES = [
    "Customer is a VIP, escalate if needed.",
    "Checked with the warehouse, waiting for their answer.",
    "Refund approved by finance, ticket FIN-{o}.",
    "Possible duplicate of an older conversation.",
    "Carrier claim opened, reference {o}.",
    "Handing over to the night shift.",
]
# Queue languages (the demo's, inbox/agents/management/commands/seed_demo.py) and their share of conversations;
# "" is the fallback queue, whose customers write it / pl.
LANGUAGE_WEIGHTS = {
    "en": 28,
    "es": 12,
    "de": 8,
    "zh": 7,
    "ru": 7,
    "fr": 7,
    "pt": 6,
    "ja": 5,
    "tr": 4,
    "ar": 4,
    "ko": 3,
    "vi": 3,
    "": 6,
}
ACCOUNTS = [  # (kind, name, share of that kind's conversations)
    ("webchat", "Website", 0.8),
    ("webchat", "Help centre widget", 0.2),
    ("email", "support@example.com", 0.7),
    ("email", "billing@example.com", 0.25),
    ("email", "partners@example.com", 0.05),
    ("telegram", "Telegram @example_support_bot", 1.0),
    ("x", "X @example", 1.0),
]
KIND_WEIGHTS = {"webchat": 40, "email": 35, "telegram": 15, "x": 10}  # identities, and so conversations
ERRORS = [
    "403 Forbidden: bot was blocked by the user",
    "550 5.1.1 The email account that you tried to reach does not exist",
    "349: You cannot send messages to this user",
]
DAY = 86400.0


def fill(template: str, rng: random.Random, name: str) -> str:
    if "{" not in template:
        return template
    return (
        template.replace("{o}", str(rng.randrange(100000, 9999999)))
        .replace("{n}", str(rng.randrange(2, 15)))
        .replace("{name}", name)
    )


def compose(rng: random.Random, lang: str, direction: str, name: str, kind: str) -> str:
    """One message of varied length: mostly one to three sentences, sometimes a long e-mail."""
    if direction == "note":
        return fill(rng.choice(NOTES), rng, name)
    bank = TEXTS[lang][direction]
    r = rng.random()
    count = 1 if r < 0.45 else rng.randint(2, 3) if r < 0.85 else rng.randint(4, 9)
    text = " ".join(fill(rng.choice(bank), rng, name) for _ in range(count))
    if kind == "email" and rng.random() < 0.3:  # paragraphs, a signature, sometimes the quoted history
        parts = [text] + [fill(rng.choice(bank), rng, name) for _ in range(rng.randint(1, 4))]
        text = "\n\n".join(parts) + f"\n\n--\n{name}"
        if rng.random() < 0.4:
            quoted = " ".join(fill(rng.choice(TEXTS[lang]["out"]), rng, name) for _ in range(rng.randint(2, 6)))
            text += "\n\n> " + quoted
    return text


# --- COPY helpers ----------------------------------------------------------------------------------------------
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def cell(value: Any) -> str:
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPE) if ("\\" in value or "\t" in value or "\n" in value) else value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float) and value > 1e9:  # epoch seconds -> timestamptz
        return datetime.fromtimestamp(value, UTC).isoformat()
    return str(value)


def copy_rows(cur: Any, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]], progress: Progress) -> int:
    """COPY rows in chunks; the server parses a chunk while this process generates the next one."""
    n = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        chunk: list[str] = []
        for row in rows:
            chunk.append("\t".join(map(cell, row)))
            if len(chunk) >= 5000:
                copy.write(("\n".join(chunk) + "\n").encode())
                progress.advance(len(chunk))
                n += len(chunk)
                chunk = []
        if chunk:
            copy.write(("\n".join(chunk) + "\n").encode())
            progress.advance(len(chunk))
            n += len(chunk)
    return n


def check_columns(cur: Any, table: str, columns: list[str]) -> None:
    """Fail clearly when the model grew a NOT NULL column without a database default that this seeder misses."""
    cur.execute(
        "select column_name from information_schema.columns where table_name = %s and is_nullable = 'NO' "
        "and column_default is null and is_identity = 'NO'",
        (table,),
    )
    missing = sorted({r[0] for r in cur.fetchall()} - set(columns) - {"id"})
    if missing:
        raise SystemExit(f"{table} has NOT NULL column(s) {', '.join(missing)} that bench/inbox.py does not fill")


def drop_secondary(cur: Any, tables: list[str]) -> list[str]:
    """Drop the tables' foreign keys and the indexes that back no constraint; return the DDL that rebuilds them."""
    rebuild: list[str] = []
    fks: list[str] = []
    for table in tables:
        # Foreign keys, and unique constraints other than the primary key (a random UUID per row is cheaper
        # to index once, sorted, than row by row).
        cur.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = %s::regclass "
            "and contype in ('f', 'u') order by contype desc",
            (table,),
        )
        for name, definition in cur.fetchall():
            (fks if definition.startswith("FOREIGN") else rebuild).append(
                f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
            )
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        cur.execute(
            "select i.relname, pg_get_indexdef(i.oid) from pg_index x join pg_class i on i.oid = x.indexrelid "
            "where x.indrelid = %s::regclass and not exists (select 1 from pg_constraint c where c.conindid = i.oid)",
            (table,),
        )
        for name, definition in cur.fetchall():
            rebuild.append(definition)
            cur.execute(f'DROP INDEX "{name}"')
    return rebuild + fks  # indexes first: the foreign keys' checks read the referenced tables' primary keys


# --- Seeding ---------------------------------------------------------------------------------------------------
@dataclass
class Conv:
    id: int
    account_id: int
    kind: str
    contact_id: int
    identity_id: int
    lang: str  # the customer's language ("it" / "pl" in the fallback queue)
    queue_id: int
    status: str
    priority: int
    assignee_id: int | None
    count: int
    seed: int
    name: str
    start: float = 0.0
    times: list[float] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)


def timeline(conv: Conv, now: float) -> None:
    """Message times and directions, the same on every call (a conversation's own random stream)."""
    rng = random.Random(conv.seed)
    chat = conv.kind != "email"
    offsets, directions = [0.0], ["in"]
    t = 0.0
    for _ in range(conv.count - 1):
        prev = directions[-1]
        r = rng.random()
        if prev == "in":
            d = "out" if r < 0.62 else "note" if r < 0.70 else "in"
        else:
            d = "in" if r < 0.72 else "out" if r < 0.95 else "note"
        if chat:
            gap = rng.expovariate(1 / 90) if rng.random() > 0.06 else rng.expovariate(1 / DAY)
        else:
            gap = rng.expovariate(1 / (5 * 3600))
        t += gap + 1.0
        offsets.append(t)
        directions.append(d)
    if conv.status == "open":  # the customer is waiting: the last word is theirs
        directions[-1] = "in"
    elif conv.status in ("pending", "snoozed") and conv.count > 1:  # waiting on the customer
        directions[-1] = "out"
    span = offsets[-1]
    if conv.status == "resolved":
        latest = now - span - DAY
        start = latest - rng.random() * (365 * DAY - span) if span < 300 * DAY else latest
    else:
        start = now - span - rng.random() * (3 * DAY if conv.status == "open" else 14 * DAY) - 60
    conv.start = start
    conv.times = [start + o for o in offsets]
    conv.directions = directions


def message_counts(rng: random.Random, conversations: int, messages: int) -> list[int]:
    """~messages/conversations each, log-normal (most short, a long tail) plus a few very long ones."""
    raw = [rng.lognormvariate(0.0, 0.9) for _ in range(conversations)]
    giants = max(1, conversations // 2000)
    scale = (messages - giants * 600) / sum(raw)
    counts = [max(1, round(x * scale)) for x in raw]
    for i in rng.sample(range(conversations), giants):
        counts[i] = rng.randint(200, 1000)
    counts[rng.randrange(conversations)] = 1500  # the largest conversation
    diff = messages - sum(counts)
    while diff:
        i = rng.randrange(conversations)
        step = 1 if diff > 0 else -1
        if counts[i] + step >= 1 and counts[i] < 200:
            counts[i] += step
            diff -= step
    return counts


def seed_orm() -> dict[str, Any]:
    """Queues, agents, manager, channel accounts: few rows, through the project's services."""
    from django.contrib.auth import get_user_model

    from inbox.agents.management.commands.seed_demo import QUEUES
    from inbox.agents.services import agent_upsert
    from inbox.conversations.models import ChannelAccount
    from inbox.routing.models import AgentProfile, AgentQueue
    from inbox.routing.services import queue_ensure_fallback

    queues = {lang: AgentQueue.objects.create(language=lang, name=name).pk for lang, name in QUEUES}
    fallback = queue_ensure_fallback()
    queues[""] = fallback.pk
    agents: dict[str, list[int]] = {}
    online = AgentProfile.Presence.ONLINE
    for lang in queues:
        ids = []
        for n in range(3 if lang else 2):
            username = f"agent-{lang or 'other'}-{n}"
            langs = [lang] if lang and (n == 0 or lang == "en") else [lang, "en"] if lang else ["en"]
            user = agent_upsert(username=username, password=PASSWORD, languages=langs, presence=online, capacity=8)
            if not lang:
                AgentProfile.objects.get(user=user).queues.set([fallback])
            ids.append(user.pk)
        agents[lang] = ids
    agent_upsert(username=MANAGER, password=PASSWORD, role=AgentProfile.Role.MANAGER)
    accounts: dict[str, list[tuple[int, float]]] = {}
    for kind, name, share in ACCOUNTS:
        account = ChannelAccount.objects.create(kind=kind, name=name, health=ChannelAccount.Health.OK)
        accounts.setdefault(kind, []).append((account.pk, share))
    assert get_user_model().objects.filter(username=AGENT).exists()
    return {"queues": queues, "agents": agents, "accounts": accounts}


def seed(url: str, args: argparse.Namespace) -> float:
    import psycopg

    started = time.perf_counter()
    rng = random.Random(args.seed)
    now = time.time()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE auth_user, routing_agentqueue, conversations_channelaccount, conversations_contact, "
            "django_session RESTART IDENTITY CASCADE"
        )
        conn.execute("DROP TABLE IF EXISTS bench_inbox_meta")
    log("queues, agents, channel accounts (ORM)")
    from django.test.utils import override_settings

    # The bench signs in with force_login: no need for Argon2's deliberate slowness on 40 passwords.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        ref = seed_orm()
    queues, agents, accounts = ref["queues"], ref["agents"], ref["accounts"]

    langs = list(LANGUAGE_WEIGHTS)
    lang_weights = list(LANGUAGE_WEIGHTS.values())
    kinds = list(KIND_WEIGHTS)
    kind_weights = list(KIND_WEIGHTS.values())

    # Contacts and identities: a contact writes in one language, over 1-3 channel kinds.
    contacts: list[tuple[str, str, list[tuple[int, str]]]] = []  # (queue language, customer language, identities)
    contact_rows, identity_rows = [], []
    identity_id = 0
    for cid in range(1, args.contacts + 1):
        qlang = rng.choices(langs, lang_weights)[0]
        lang = qlang or rng.choice(["it", "pl"])
        first, last = rng.choice(TEXTS[lang]["first"]), rng.choice(TEXTS[lang]["last"])
        name = f"{first} {last}"
        n_ids = rng.choices([1, 2, 3], [60, 30, 10])[0]
        chosen: list[str] = []
        while len(chosen) < n_ids:
            k = rng.choices(kinds, kind_weights)[0]
            if k not in chosen:
                chosen.append(k)
        ids, email = [], ""
        created = now - rng.random() * 400 * DAY
        for k in chosen:
            identity_id += 1
            if k == "email":
                handle = email = f"customer{cid}.{identity_id}@example.{rng.choice(['com', 'net', 'org', 'de'])}"
            elif k == "webchat":
                handle = uuid.UUID(int=rng.getrandbits(128), version=4).hex
            else:
                handle = str(10_000_000 + identity_id * 7)
            identity_rows.append((identity_id, cid, k, handle, name if k != "webchat" else "", created))
            ids.append((identity_id, k))
        contacts.append((qlang, lang, ids))
        contact_rows.append((cid, name, email, created))

    # Conversations: some contacts come back often (a skewed pick), most once or twice.
    counts = message_counts(rng, args.conversations, args.messages)
    convs: list[Conv] = []
    unresolved_threads: set[tuple[int, int]] = set()
    for conv_id in range(1, args.conversations + 1):
        contact_index = min(args.contacts - 1, int(args.contacts * rng.random() ** 1.4))
        qlang, lang, ids = contacts[contact_index]
        identity, kind = rng.choice(ids)
        options = accounts[kind]
        account_id = rng.choices([a for a, _ in options], [s for _, s in options])[0]
        r = rng.random()
        status = "open" if r < 0.10 else "pending" if r < 0.14 else "snoozed" if r < 0.15 else "resolved"
        if status != "resolved" and kind != "email":  # chats: one unresolved conversation per identity
            if (account_id, identity) in unresolved_threads:
                status = "resolved"
            else:
                unresolved_threads.add((account_id, identity))
        if status == "resolved":
            assignee = rng.choice(agents[qlang]) if rng.random() < 0.92 else None
        else:
            assignee = rng.choice(agents[qlang]) if rng.random() < (0.55 if status == "open" else 0.9) else None
        priority = rng.choices([0, 1, 2], [80, 15, 5])[0]
        conv = Conv(
            id=conv_id,
            account_id=account_id,
            kind=kind,
            contact_id=contact_index + 1,
            identity_id=identity,
            lang=lang,
            queue_id=queues[qlang],
            status=status,
            priority=priority,
            assignee_id=assignee,
            count=counts[conv_id - 1],
            seed=rng.getrandbits(63),
            name=contact_rows[contact_index][1].split()[0],
        )
        convs.append(conv)

    def conversation_rows() -> Iterator[tuple[Any, ...]]:
        for c in convs:
            timeline(c, now)
            last = c.times[-1]
            first_out = next((t for t, d in zip(c.times, c.directions, strict=True) if d == "out"), None)
            waiting = None
            if c.status == "open":  # since the first customer message after our last answer
                for t, d in zip(reversed(c.times), reversed(c.directions), strict=True):
                    if d == "out":
                        break
                    if d == "in":
                        waiting = t
            subject = ""
            thread_key = ""
            if c.kind == "email":
                subject = fill(TEXTS[c.lang]["in"][c.seed % len(TEXTS[c.lang]["in"])], random.Random(c.seed), c.name)
                subject = subject.split(".")[0][:120]
                thread_key = f"<{c.seed:x}.{c.id}@mail.example.com>"
            yield (
                c.id,
                c.account_id,
                c.contact_id,
                c.identity_id,
                thread_key,
                subject,
                c.lang,
                c.queue_id,
                c.status,
                c.priority,
                c.assignee_id,
                c.start,
                waiting,
                first_out,
                last,
                last + 600.0 if c.status == "resolved" else None,
                None,
                last + 2 * DAY if c.status == "snoozed" else None,
            )
            c.times, c.directions = [], []  # rebuilt for the messages: keeps memory flat

    delivery_rows: list[tuple[Any, ...]] = []

    def message_rows() -> Iterator[tuple[Any, ...]]:
        msg_id = 0
        for c in convs:
            timeline(c, now)
            queue_agents = agents_by_queue[c.queue_id]
            for t, d in zip(c.times, c.directions, strict=True):
                msg_id += 1
                text = compose(rng, c.lang, d, c.name, c.kind)
                body_html = ""
                external_id = ""
                author = None
                sender = None
                language, confidence = "", 0.0
                sent_at = None
                metadata = "{}"
                if d == "in":
                    sender = c.identity_id
                    external_id = f"{c.kind}-{msg_id}"
                    language, confidence = c.lang, round(0.80 + rng.random() * 0.2, 3)
                    if c.kind == "email":
                        metadata = json.dumps({"message_id": f"<{msg_id}.{c.seed:x}@customer.example>"})
                        if rng.random() < 0.5:
                            body_html = "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"
                    elif c.kind in ("telegram", "x"):
                        sent_at = t - rng.random() * 2
                else:
                    author = c.assignee_id or rng.choice(queue_agents)
                    if d == "out":
                        r = rng.random()
                        state = (
                            "sent" if r < 0.97 else "failed" if r < 0.99 else "uncertain" if r < 0.995 else "retry_wait"
                        )
                        provider = f"p-{msg_id}" if state == "sent" else ""
                        external_id = provider
                        delivery_rows.append(
                            (
                                msg_id,
                                c.account_id,
                                state,
                                1 if state == "sent" else 3,
                                t + 300 if state == "retry_wait" else None,
                                t + 0.2,
                                provider,
                                rng.choice(ERRORS) if state == "failed" else "",
                                t,
                                t + 0.8 if state == "sent" else None,
                            )
                        )
                yield (
                    msg_id,
                    uuid.UUID(int=rng.getrandbits(128), version=4),
                    c.account_id,
                    c.id,
                    d,
                    sender,
                    author,
                    text,
                    body_html,
                    language,
                    confidence,
                    external_id,
                    metadata,
                    sent_at,
                    t,
                )
            c.times, c.directions = [], []

    agents_by_queue = {queues[lang]: ids for lang, ids in agents.items()}
    tables = {
        "conversations_contact": ["id", "name", "email", "created_at"],
        "conversations_contactidentity": ["id", "contact_id", "kind", "handle", "display_name", "created_at"],
        "conversations_conversation": [
            "id",
            "account_id",
            "contact_id",
            "identity_id",
            "thread_key",
            "subject",
            "language",
            "queue_id",
            "status",
            "priority",
            "assignee_id",
            "created_at",
            "waiting_since",
            "first_response_at",
            "last_message_at",
            "resolved_at",
            "next_send_at",
            "snoozed_until",
        ],
        "conversations_message": [
            "id",
            "uuid",
            "account_id",
            "conversation_id",
            "direction",
            "sender_identity_id",
            "author_id",
            "text",
            "html",
            "language",
            "language_confidence",
            "external_id",
            "metadata",
            "sent_at",
            "created_at",
        ],
        "conversations_outbounddelivery": [
            "message_id",
            "account_id",
            "state",
            "attempts",
            "next_attempt_at",
            "claimed_at",
            "provider_id",
            "last_error",
            "created_at",
            "sent_at",
        ],
    }
    log(f"generated {len(contact_rows):,} contacts, {len(identity_rows):,} identities in memory")
    with psycopg.connect(url) as conn, conn.cursor() as cur:  # one transaction: all or nothing
        for table, columns in tables.items():
            check_columns(cur, table, columns)
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cur.execute("SET LOCAL synchronous_commit = off")
        rebuild = drop_secondary(cur, list(tables))
        loads = [
            ("contacts", "conversations_contact", iter(contact_rows), len(contact_rows)),
            ("identities", "conversations_contactidentity", iter(identity_rows), len(identity_rows)),
            ("conversations", "conversations_conversation", conversation_rows(), len(convs)),
            ("messages", "conversations_message", message_rows(), args.messages),
        ]
        for label, table, rows, total in loads:
            progress = Progress(label, total)
            copy_rows(cur, table, tables[table], rows, progress)
            progress.close()
        progress = Progress("deliveries", len(delivery_rows))
        copy_rows(
            cur,
            "conversations_outbounddelivery",
            tables["conversations_outbounddelivery"],
            iter(delivery_rows),
            progress,
        )
        progress.close()
        progress = Progress("indexes, FKs", len(rebuild), unit="DDL")
        for ddl in rebuild:
            step = time.perf_counter()
            cur.execute(ddl)
            progress.advance()
            if time.perf_counter() - step > 5:
                log(f"  {time.perf_counter() - step:5.1f} s  {ddl[:110]}")
        progress.close()
        for table in tables:
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        seconds = time.perf_counter() - started
        cur.execute("CREATE TABLE bench_inbox_meta (key text PRIMARY KEY, value jsonb NOT NULL)")
        cur.execute(
            "INSERT INTO bench_inbox_meta VALUES ('shape', %s), ('seeded', %s)",
            (json.dumps(shape(args)), json.dumps({"at": datetime.now(UTC).isoformat(), "seconds": 0})),
        )
    log(f"loaded and committed after {time.perf_counter() - started:.1f} s; VACUUM ANALYZE")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        seconds = time.perf_counter() - started
        conn.execute(
            "UPDATE bench_inbox_meta SET value = jsonb_set(value, '{seconds}', %s) WHERE key = 'seeded'",
            (json.dumps(round(seconds, 1)),),
        )
    return seconds


def shape(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "version": SEED_VERSION,
        "conversations": args.conversations,
        "messages": args.messages,
        "contacts": args.contacts,
        "seed": args.seed,
    }


def existing_seed(url: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The seed already in the database when it has this shape and its counts are intact."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select to_regclass('bench_inbox_meta')").fetchone() == (None,):
            return None
        meta = dict(conn.execute("select key, value from bench_inbox_meta").fetchall())
        if meta.get("shape") != shape(args):
            return None
        counts = conn.execute(
            "select (select count(*) from conversations_conversation), (select count(*) from conversations_message)"
        ).fetchone()
        if counts != (args.conversations, args.messages):
            return None
        return meta.get("seeded") or {}


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            log(f"creating database {name}")
            conn.execute(f'create database "{name}"')


# --- Measuring -------------------------------------------------------------------------------------------------
@dataclass
class Case:
    label: str
    user: str
    urls: list[str]
    setting: str  # the page-size setting that applies to this page
    runs: list[dict[str, float]] = field(default_factory=list)
    queries: dict[int, tuple[int, int]] = field(default_factory=dict)  # page size -> (queries, rows shown)
    slowest: tuple[float, str] = (0.0, "")
    split: dict[str, float] = field(default_factory=dict)  # median ms: total, db, template


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# What a page shows, to check that the page-size override took effect: the list's rows, the timeline's messages.
SHOWN = {
    "SWITCHBOARD_INBOX_PAGE_SIZE": re.compile(r'href="/inbox/c/(\d+)/"'),
    "SWITCHBOARD_TIMELINE_PAGE_SIZE": re.compile(r'data-sb="message" data-id="(\d+)"'),
}


def fetch(client: Any, url: str) -> Any:
    response = client.get(url)
    if response.status_code != 200:
        body = response.content[:300].decode(errors="replace")
        raise SystemExit(f"GET {url} answered {response.status_code}, not 200: {body}")
    return response


def build_cases(args: argparse.Namespace) -> list[Case]:
    from django.conf import settings
    from django.db import connection
    from django.urls import reverse

    from inbox.routing.models import AgentQueue

    rng = random.Random(args.seed + 1)
    en = AgentQueue.objects.get(language="en").pk
    de = AgentQueue.objects.get(language="de").pk
    inbox = reverse("inbox")
    with connection.cursor() as cur:
        cur.execute(
            "select c.id from conversations_conversation c where c.queue_id = %s "
            "order by (select count(*) from conversations_message m where m.conversation_id = c.id) desc limit 1",
            [en],
        )
        largest_en = cur.fetchone()[0]
        cur.execute("select conversation_id from conversations_message group by 1 order by count(*) desc limit 1")
        largest = cur.fetchone()[0]
        cur.execute("select id from conversations_conversation where queue_id = %s", [en])
        en_ids = [r[0] for r in cur.fetchall()]
        cur.execute("select id from conversations_conversation")
        all_ids = [r[0] for r in cur.fetchall()]
    conv = lambda pk: reverse("inbox-conversation", args=[pk])  # noqa: E731
    list_size, timeline_size = "SWITCHBOARD_INBOX_PAGE_SIZE", "SWITCHBOARD_TIMELINE_PAGE_SIZE"
    assert hasattr(settings, list_size) and hasattr(settings, timeline_size)
    cases = []
    for user, queue in ((AGENT, en), (MANAGER, de)):
        who = "agent" if user == AGENT else "manager"
        cases += [
            Case(f"list {who}", user, [inbox], list_size),
            Case(f"list {who} ?queue", user, [f"{inbox}?queue={queue}"], list_size),
            Case(f"list {who} ?status=resolved", user, [f"{inbox}?status=resolved"], list_size),
            Case(f"list {who} ?q={args.search}", user, [f"{inbox}?q={args.search}"], list_size),
            Case(f"list {who} ?q=<order no.>", user, [f"{inbox}?q={args.rare_search}"], list_size),
            Case(f"list {who} ?page=2", user, [f"{inbox}?page=2"], list_size),
            Case(f"list {who} resolved p.20", user, [f"{inbox}?status=resolved&page=20"], list_size),
        ]
        pool = en_ids if user == AGENT else all_ids
        cases += [
            Case(f"conversation {who} random", user, [conv(pk) for pk in rng.sample(pool, 200)], timeline_size),
            Case(f"conversation {who} largest", user, [conv(largest_en if user == AGENT else largest)], timeline_size),
        ]
    return cases


def timed_request(client: Any, url: str) -> dict[str, Any]:
    """One request with its time split: SQL (every query, timed around the driver call), template rendering
    (without the queries it runs), and the rest (middleware, session, connecting, the view's Python, the ORM
    turning rows into objects)."""
    from django.db import connection
    from django.template.backends.django import Template

    queries: list[tuple[float, str]] = []
    in_template = [0.0, 0.0]  # template seconds, of which SQL seconds

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = time.perf_counter() - t0
            queries.append((took, connection.ops.last_executed_query(context["cursor"], sql, params)))
            if rendering:
                in_template[1] += took

    rendering = False
    original = Template.render

    def render(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal rendering
        t0 = time.perf_counter()
        rendering = True
        try:
            return original(self, *args, **kwargs)
        finally:
            rendering = False
            in_template[0] += time.perf_counter() - t0

    Template.render = render  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            t0 = time.perf_counter()
            fetch(client, url)
            total = time.perf_counter() - t0
    finally:
        Template.render = original  # type: ignore[method-assign]
    db = sum(q[0] for q in queries)
    return {
        "total": total * 1000,
        "db": db * 1000,
        "template": (in_template[0] - in_template[1]) * 1000,
        "queries": queries,
    }


def measure(args: argparse.Namespace) -> None:
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    users = get_user_model().objects
    clients = {}
    for username in (AGENT, MANAGER):
        client = Client()
        client.force_login(users.get(username=username))
        clients[username] = client
    cases = build_cases(args)
    args.load_before = load()
    log(f"load average {args.load_before}")
    total = len(cases) * args.rounds
    log(f"measuring {len(cases)} pages x {args.requests} requests x {args.rounds} rounds")

    for case in cases:  # warm-up and the check that every page answers
        for url in case.urls[:20] * max(1, 20 // len(case.urls[:20])):
            fetch(clients[case.user], url)

    progress = Progress("requests", total * args.requests, unit="req")
    for _ in range(args.rounds):
        for case in cases:
            client = clients[case.user]
            times = []
            for i in range(args.requests):
                url = case.urls[i % len(case.urls)]
                t0 = time.perf_counter()
                fetch(client, url)
                times.append((time.perf_counter() - t0) * 1000)
                progress.advance()
            case.runs.append({"p50": pct(times, 0.50), "p95": pct(times, 0.95), "p99": pct(times, 0.99)})
    progress.close()

    for case in cases:  # queries per page size; where the time goes; the slowest query (median of 10)
        client = clients[case.user]
        url = case.urls[0]
        for size in PAGE_SIZES:
            with override_settings(**{case.setting: size}), CaptureQueriesContext(connection) as ctx:
                response = fetch(client, url)
            shown = len(set(SHOWN[case.setting].findall(response.content.decode())))
            case.queries[size] = (len(ctx.captured_queries), shown)
        samples = [timed_request(client, url) for _ in range(10)]
        case.split = {k: statistics.median(s[k] for s in samples) for k in ("total", "db", "template")}
        last = samples[-1]["queries"]
        same = [s["queries"] for s in samples if len(s["queries"]) == len(last)]
        timed = [(statistics.median(q[i][0] for q in same), last[i][1]) for i in range(len(last))]
        case.slowest = max(timed) if timed else (0.0, "")

    report(args, cases)
    if args.write_docs:
        write_docs(args, cases)
    if not args.no_explain:
        explain(cases)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**20:.1f} GiB RAM"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(args: argparse.Namespace, cases: list[Case]) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("show server_version")
        pg = cur.fetchone()[0]
        cur.execute("show shared_buffers")
        buffers = cur.fetchone()[0]
    print()
    print(f"machine               {machine()}; PostgreSQL {pg.split()[0]}, shared_buffers {buffers}")
    print(f"date                  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"load average          {args.load_before} before, {load()} after (1 / 5 / 15 min)")
    pool = connection.settings_dict.get("OPTIONS", {}).get("pool")
    conn_age = connection.settings_dict.get("CONN_MAX_AGE")
    print(
        "connections           "
        + (
            f"psycopg pool {pool}"
            if pool
            else f"CONN_MAX_AGE={conn_age} ({'a new one per request' if not conn_age else 'kept'})"
        )
    )
    print()
    print(f"inbox render time, ms: median over {args.rounds} rounds of p50 / p95 / p99 ({args.requests} requests each)")
    print(f"queries per page at page size {' / '.join(map(str, PAGE_SIZES))} (conversations / messages shown)")
    print()
    print(f"{'page':<34} {'p50':>7} {'p95':>7} {'p95 min-max':>13} {'p99':>7}   queries (rows shown)")
    for case in cases:
        med = {k: statistics.median(r[k] for r in case.runs) for k in ("p50", "p95", "p99")}
        p95s = [r["p95"] for r in case.runs]
        queries = "  ".join(f"{q} ({rows})" for q, rows in (case.queries[s] for s in PAGE_SIZES))
        spread = f"{min(p95s):.1f}-{max(p95s):.1f}"
        print(f"{case.label:<34} {med['p50']:7.1f} {med['p95']:7.1f} {spread:>13} {med['p99']:7.1f}   {queries}")
    print()
    print("where the time goes, ms (median of 10 instrumented requests; the first URL of each page)")
    print(f"{'page':<34} {'total':>7} {'SQL':>7} {'template':>9} {'rest':>7} {'slowest query':>14}")
    for case in cases:
        t = case.split
        rest = t["total"] - t["db"] - t["template"]
        slowest = case.slowest[0] * 1000
        print(f"{case.label:<34} {t['total']:7.1f} {t['db']:7.1f} {t['template']:9.1f} {rest:7.1f} {slowest:14.1f}")
    worst = max(statistics.median(r["p95"] for r in c.runs) for c in cases)
    print()
    print(f"worst p95 {worst:.1f} ms ({'under' if worst < 50 else 'OVER'} the 50 ms target)")
    growing = [c.label for c in cases if len({c.queries[s][0] for s in PAGE_SIZES}) > 1]
    print("queries grow with page size: " + (", ".join(growing) if growing else "none"))


def write_docs(args: argparse.Namespace, cases: list[Case]) -> None:
    """The measured part of docs/benchmarks.md's inbox section (bench/_report.py)."""
    import _report
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("show server_version")
        pg = cur.fetchone()[0].split()[0]
        cur.execute("show shared_buffers")
        buffers = cur.fetchone()[0]
    pool = connection.settings_dict.get("OPTIONS", {}).get("pool")
    command = f".venv/bin/python bench/inbox.py --requests {args.requests} --rounds {args.rounds} --write-docs"
    head = _report.header(
        command,
        [
            f"**Data:** {args.conversations:,} conversations, {args.messages:,} messages, {args.contacts:,} contacts "
            f"(the seed described above); PostgreSQL {pg}, shared_buffers {buffers}.",
            "**Connections:** "
            + ("borrowed from the web process's psycopg pool." if pool else "a new connection per request."),
            f"**Load average before the run:** {args.load_before}.",
        ],
    )
    rows = []
    for case in cases:
        med = {k: statistics.median(r[k] for r in case.runs) for k in ("p50", "p95", "p99")}
        p95 = _report.spread([r["p95"] for r in case.runs])
        queries = " / ".join(f"{case.queries[s][0]} ({case.queries[s][1]})" for s in PAGE_SIZES)
        rows.append(
            (
                case.label.replace("<", "&lt;").replace(">", "&gt;"),
                f"{med['p50']:.1f}",
                p95,
                f"{med['p99']:.1f}",
                queries,
            )
        )
    split = [
        (
            case.label.replace("<", "&lt;").replace(">", "&gt;"),
            f"{case.split['total']:.1f}",
            f"{case.split['db']:.1f}",
            f"{case.split['template']:.1f}",
            f"{case.split['total'] - case.split['db'] - case.split['template']:.1f}",
            f"{case.slowest[0] * 1000:.1f}",
        )
        for case in cases
    ]
    worst = max(statistics.median(r["p95"] for r in c.runs) for c in cases)
    growing = [c.label for c in cases if len({c.queries[s][0] for s in PAGE_SIZES}) > 1]
    body = "\n\n".join(
        [
            head,
            f"Render time in ms over {args.requests} requests per page and round: median over {args.rounds} rounds "
            f"of p50 / p95 / p99 (p95: median (min-max) of the rounds). Queries per page at page size "
            f"{' / '.join(map(str, PAGE_SIZES))}, rows or messages shown in brackets.",
            _report.table(["page", "p50 ms", "p95 ms", "p99 ms", "queries (rows shown)"], rows),
            f"**Worst p95: {worst:.1f} ms** ({'under' if worst < 50 else 'over'} the 50 ms goal). Queries growing "
            f"with the page size: {', '.join(growing) if growing else 'none'}.",
            "Where the time goes (ms, median of 10 instrumented requests of each page's first URL; the rest is "
            "middleware, session, the view's Python and the ORM building objects):",
            _report.table(["page", "total", "SQL", "template", "rest", "slowest query"], split),
        ]
    )
    _report.write_section("inbox", body, title="Agent inbox at 1,000,000 messages")


def explain(cases: list[Case]) -> None:
    from django.db import connection

    seen: set[str] = set()
    for case in cases:
        seconds, sql = case.slowest
        if not sql:
            continue
        print()
        print(f"== {case.label}: slowest query {seconds * 1000:.1f} ms (median, timed around the driver call)")
        if sql in seen:
            print("(the same query as above)")
            continue
        seen.add(sql)
        print(sql)
        with connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            for (line,) in cur.fetchall():
                print("   " + line)


# --- Main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}")
    parser.add_argument("--reseed", action="store_true", help="seed again even when the database holds this seed")
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200, help="requests per page and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--search", default="refund", help="a word of some messages, for ?q=")
    parser.add_argument("--rare-search", default="4711", help="a rarer string (part of order numbers), for ?q=")
    parser.add_argument("--seed-only", action="store_true", help="seed (or check the seed) and stop")
    parser.add_argument("--no-explain", action="store_true")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()

    url = args.database_url
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
    os.environ.setdefault("DB_POOL", "1")  # as inbox/asgi.py sets it for the web process
    ensure_database(url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    seeded = None if args.reseed else existing_seed(url, args)
    if seeded is not None:
        log(f"reusing the seed from {seeded.get('at', '?')} (took {seeded.get('seconds', '?')} s); --reseed to redo")
    else:
        log(
            f"seeding {args.conversations:,} conversations, {args.messages:,} messages, {args.contacts:,} contacts "
            f"into {url.rsplit('/', 1)[1]}"
        )
        seconds = seed(url, args)
        log(f"seeded in {seconds:.1f} s")
        print(f"seeding               {seconds:.1f} s ({args.messages:,} messages)")
    if args.seed_only:
        return
    measure(args)


if __name__ == "__main__":
    main()
